//! A Hugging Face Hub on 127.0.0.1 for the download tests: std::net and one thread per
//! connection, answering what hf-hub 1.x asks and how huggingface.co answers it.
//!
//! `HEAD|GET /{datasets/}ORG/NAME/resolve/{REVISION}/{PATH}` (the revision percent-encoded,
//! `refs%2Fconvert%2Fparquet`):
//! - a small ("git") file: `200` with `ETag: "<git blob SHA-1>"`, `X-Repo-Commit`,
//!   `Content-Length` and, for GET, the bytes;
//! - an LFS file (parquet, safetensors, or over 10 MB as on the Hub): `302` with an absolute
//!   `Location: http://127.0.0.1:PORT/cdn/<sha256>` (hf-hub's HEAD does not follow it; its GET
//!   does), `X-Linked-Etag: "<sha256>"`, `X-Linked-Size`, `X-Repo-Commit`; `/cdn/<sha256>`
//!   then serves the bytes (`Range: bytes=A-B` answered with `206`);
//! - an unknown repository: `404` with `X-Error-Code: RepoNotFound`; an unknown file of a known
//!   one: `404` with `X-Error-Code: EntryNotFound` and `X-Repo-Commit`.
//!
//! [`Fault`]s make it fail the ways a real Hub or network does.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How the server misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers as the Hub does.
    None,
    /// Every request is answered with this HTTP status (e.g. 500).
    Status(u16),
    /// File bodies announce their full length but stop halfway, and the connection closes.
    Truncate,
    /// File bodies have their full length and headers, but one byte in the middle is changed.
    Corrupt,
}

/// One file of a repository.
pub struct HubFile {
    pub bytes: Arc<Vec<u8>>,
    /// Its SHA-256 (hex).
    pub sha256: String,
    /// Its git blob SHA-1 (hex).
    pub git_sha1: String,
    /// Served through the LFS redirect.
    pub lfs: bool,
}

impl HubFile {
    /// `bytes`, LFS as the Hub decides (`lfs` extension, or over 10 MB).
    pub fn new(path: &str, bytes: Vec<u8>) -> Self {
        use sha1::Digest as _;
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let sha256 = hex(&sha2::Sha256::digest(&bytes));
        let mut s1 = sha1::Sha1::new();
        s1.update(format!("blob {}\0", bytes.len()).as_bytes());
        s1.update(&bytes);
        let git_sha1 = hex(&s1.finalize());
        let lfs =
            path.ends_with(".parquet") || path.ends_with(".safetensors") || bytes.len() > 10 << 20;
        Self {
            bytes: Arc::new(bytes),
            sha256,
            git_sha1,
            lfs,
        }
    }
}

/// Repositories by `{datasets/}ORG/NAME` and revision, then files by path.
#[derive(Default)]
pub struct HubContent {
    repos: HashMap<(String, String), HashMap<String, HubFile>>,
}

impl HubContent {
    /// Adds `file` to repository `repo` (`ORG/NAME` for a model, `datasets/ORG/NAME` for a
    /// dataset) at `revision`.
    pub fn add(&mut self, repo: &str, revision: &str, path: &str, bytes: Vec<u8>) {
        self.repos
            .entry((repo.to_string(), revision.to_string()))
            .or_default()
            .insert(path.to_string(), HubFile::new(path, bytes));
    }
}

/// The running server; stops (and frees its port) when dropped.
pub struct LocalHub {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    fault: Arc<Mutex<Fault>>,
    log: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    content: Arc<HubContent>,
    fault: Arc<Mutex<Fault>>,
    log: Arc<Mutex<Vec<String>>>,
    base: String,
}

impl LocalHub {
    /// Serves `content` on a free port of 127.0.0.1.
    pub fn start(content: Arc<HubContent>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let fault = Arc::new(Mutex::new(Fault::None));
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            content,
            fault: fault.clone(),
            log: log.clone(),
            base: format!("http://{addr}"),
        });
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &shared);
                });
            }
        });
        Self {
            addr,
            stop,
            fault,
            log,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for `HF_ENDPOINT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, misbehave this way.
    pub fn set_fault(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }

    /// `METHOD PATH` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for LocalHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fake commit id per repository and revision (40 hex digits, as the Hub's).
fn commit_of(repo: &str, revision: &str) -> String {
    use sha1::Digest as _;
    sha1::Sha1::digest(format!("{repo}@{revision}").as_bytes())
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Arc<Vec<u8>>,
    range: Option<(usize, usize)>,
}

impl Response {
    fn new(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            body: Arc::new(vec![]),
            range: None,
        }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn serve(conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = v.trim().strip_prefix("bytes=").map(str::to_string);
            }
        }
    }
    shared
        .log
        .lock()
        .unwrap()
        .push(format!("{method} {target}"));
    let fault = *shared.fault.lock().unwrap();
    let mut resp = route(&target, range.as_deref(), shared);
    if let Fault::Status(s) = fault {
        resp = Response::new(s).header("X-Error-Message", "injected failure");
        resp.body = Arc::new(b"Internal Error - the local test Hub was told to fail".to_vec());
    }
    write(conn, &method, resp, fault)
}

fn route(target: &str, range: Option<&str>, shared: &Shared) -> Response {
    let path = target.split('?').next().unwrap_or("");
    if let Some(sha) = path.strip_prefix("/cdn/") {
        // the "CDN": LFS files by their sha256
        let found = shared
            .content
            .repos
            .values()
            .flat_map(|r| r.values())
            .find(|f| f.sha256 == sha);
        let Some(f) = found else {
            return Response::new(404);
        };
        let len = f.bytes.len();
        let mut r = Response::new(200).header("ETag", format!("\"{}\"", f.sha256));
        r.body = f.bytes.clone();
        if let Some(spec) = range {
            let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b.parse().map(|b: usize| b + 1).unwrap_or(len).min(len);
            if a >= b {
                return Response::new(416).header("Content-Range", format!("bytes */{len}"));
            }
            r.status = 206;
            r.range = Some((a, b));
            r = r.header("Content-Range", format!("bytes {a}-{}/{len}", b - 1));
        }
        return r;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (repo, rest) = match segs.first() {
        Some(&"datasets") if segs.len() > 3 => {
            (format!("datasets/{}/{}", segs[1], segs[2]), &segs[3..])
        }
        _ if segs.len() > 2 => (format!("{}/{}", segs[0], segs[1]), &segs[2..]),
        _ => return Response::new(404),
    };
    if rest.len() < 3 || rest[0] != "resolve" {
        return Response::new(404);
    }
    let revision = percent_decode(rest[1]);
    let file = rest[2..]
        .iter()
        .map(|s| percent_decode(s))
        .collect::<Vec<_>>()
        .join("/");
    let key = (repo.clone(), revision.clone());
    let Some(files) = shared.content.repos.get(&key) else {
        return Response::new(404)
            .header("X-Error-Code", "RepoNotFound")
            .header("X-Error-Message", "Repository not found");
    };
    let commit = commit_of(&repo, &revision);
    let Some(f) = files.get(&file) else {
        return Response::new(404)
            .header("X-Error-Code", "EntryNotFound")
            .header("X-Error-Message", "Entry not found")
            .header("X-Repo-Commit", commit);
    };
    if f.lfs {
        Response::new(302)
            .header("Location", format!("{}/cdn/{}", shared.base, f.sha256))
            .header("X-Linked-Etag", format!("\"{}\"", f.sha256))
            .header("X-Linked-Size", f.bytes.len().to_string())
            .header("ETag", format!("W/\"{}\"", f.git_sha1))
            .header("X-Repo-Commit", commit)
    } else {
        let mut r = Response::new(200)
            .header("ETag", format!("\"{}\"", f.git_sha1))
            .header("X-Repo-Commit", commit);
        r.body = f.bytes.clone();
        r
    }
}

fn write(mut conn: TcpStream, method: &str, resp: Response, fault: Fault) -> std::io::Result<()> {
    let (a, b) = resp.range.unwrap_or((0, resp.body.len()));
    let body = &resp.body[a..b];
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    conn.write_all(head.as_bytes())?;
    if method == "HEAD" || body.is_empty() {
        return conn.flush();
    }
    // only file bodies (200 or 206 with bytes) are cut or changed
    let is_file = resp.status == 200 || resp.status == 206;
    match fault {
        Fault::Truncate if is_file => conn.write_all(&body[..body.len() / 2])?,
        Fault::Corrupt if is_file => {
            let mut bad = body.to_vec();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x20;
            conn.write_all(&bad)?;
        }
        _ => conn.write_all(body)?,
    }
    conn.flush()?;
    // drain what the client still sends, then close (a reset could hide the body)
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 256];
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_millis(200)));
    while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
    Ok(())
}
