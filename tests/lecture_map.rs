//! The lecture map cannot go stale: README.md's `## Lecture map` and README.ko.md's
//! `## 강의 노트 지도` are read as tables (concept | code | test | command | figure) and every
//! row is checked against the working tree:
//!
//! - every link to a local path points at a file that exists;
//! - every code link [`name`](file.rs) names a `fn`, `struct`, `enum`, `trait`, `const`, `type`
//!   or `mod` defined in that file (for `Type::method`, the method, and `Type` as a type);
//! - every test link [`name`](file.rs) names a `#[test] fn` in that file;
//! - every command is a `cargo` command whose `--example`, `--test` and test filter exist;
//! - every figure is a PNG that exists;
//! - both maps have the same rows: the same link targets and commands, row by row.
//!
//! Failures name the map, the row and the missing thing.

use std::path::Path;

const EN_HEADING: &str = "## Lecture map";
const KO_HEADING: &str = "## 강의 노트 지도";
const COLUMNS: [&str; 5] = ["concept", "code", "test", "command", "figure"];
/// What an empty cell holds.
const NONE: &str = "—";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A markdown link `[text](target)`.
#[derive(Debug, Clone, PartialEq)]
struct Link {
    text: String,
    target: String,
}

impl Link {
    /// `name` for a link written [`name`](…).
    fn code_name(&self) -> Option<&str> {
        let t = self.text.trim();
        t.strip_prefix('`')?
            .strip_suffix('`')
            .filter(|n| !n.is_empty())
    }
    /// The path of a link into the repository (no scheme, no `#fragment`), if it is one.
    fn local_path(&self) -> Option<&str> {
        let t = self.target.trim();
        if t.is_empty() || t.starts_with('#') || t.contains("://") || t.starts_with("mailto:") {
            return None;
        }
        Some(t.split('#').next().unwrap_or(t))
    }
}

/// A row of a map, with its 1-based number.
#[derive(Debug)]
struct Row {
    number: usize,
    cells: Vec<String>,
}

impl Row {
    fn concept(&self) -> String {
        let c = self.cells.first().map_or("", String::as_str);
        let short: String = c.chars().take(50).collect();
        if short.len() < c.len() {
            format!("{short}…")
        } else {
            short
        }
    }
    fn cell(&self, column: usize) -> &str {
        self.cells.get(column).map_or("", String::as_str)
    }
    /// Local link targets of the code, test and figure cells, in order.
    fn targets(&self) -> Vec<String> {
        [1, 2, 4]
            .iter()
            .flat_map(|&c| links(self.cell(c)))
            .filter_map(|l| l.local_path().map(str::to_string))
            .collect()
    }
    fn commands(&self) -> Vec<String> {
        code_spans(self.cell(3))
    }
}

/// The text under `heading` up to the next `## ` heading.
fn section(markdown: &str, heading: &str) -> Option<String> {
    let mut lines = markdown.lines();
    lines.by_ref().find(|l| l.trim_end() == heading)?;
    Some(
        lines
            .take_while(|l| !l.starts_with("## "))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// The cells of a table line, split at unescaped `|`.
fn split_cells(line: &str) -> Vec<String> {
    let line = line.trim();
    let line = line.strip_prefix('|').unwrap_or(line);
    let line = line.strip_suffix('|').unwrap_or(line);
    let mut cells = vec![String::new()];
    let mut escaped = false;
    for ch in line.chars() {
        if ch == '|' && !escaped {
            cells.push(String::new());
        } else {
            cells.last_mut().expect("one cell").push(ch);
        }
        escaped = ch == '\\';
    }
    cells.iter().map(|c| c.trim().to_string()).collect()
}

fn is_separator(line: &str) -> bool {
    let cells = split_cells(line);
    cells
        .iter()
        .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':' | ' ')))
}

/// The body rows of the tables in `text` (header and separator lines left out).
fn table_rows(text: &str) -> Vec<Row> {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .collect();
    let mut rows = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let header = lines.get(i + 1).is_some_and(|next| is_separator(next));
        if header || is_separator(line) {
            continue;
        }
        rows.push(Row {
            number: rows.len() + 1,
            cells: split_cells(line),
        });
    }
    rows
}

/// Every `[text](target)` in `text`.
fn links(text: &str) -> Vec<Link> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        let tail = &after[close + 1..];
        if let (Some(inner), Some(end)) = (tail.strip_prefix('('), tail.find(')')) {
            if !after[..close].contains('[') {
                out.push(Link {
                    text: after[..close].to_string(),
                    target: inner[..end - 1].to_string(),
                });
                rest = &tail[end + 1..];
                continue;
            }
        }
        rest = after;
    }
    out
}

/// The contents of the `` `code spans` `` in `text`.
fn code_spans(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// Byte offsets where `keyword name` stands as whole words in `source`.
fn definitions(source: &str, keyword: &str, name: &str) -> Vec<usize> {
    let needle = format!("{keyword} {name}");
    source
        .match_indices(&needle)
        .filter(|(at, _)| {
            let before = source[..*at].chars().next_back();
            let after = source[at + needle.len()..].chars().next();
            !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
        })
        .map(|(at, _)| at)
        .collect()
}

fn defines(source: &str, name: &str, keywords: &[&str]) -> bool {
    keywords
        .iter()
        .any(|k| !definitions(source, k, name).is_empty())
}

/// `fn name` with `#[test]` among the attributes above it.
fn defines_test(source: &str, name: &str) -> bool {
    definitions(source, "fn", name).into_iter().any(|at| {
        let line_start = source[..at].rfind('\n').map_or(0, |i| i + 1);
        source[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .take_while(|l| l.is_empty() || l.starts_with("#[") || l.starts_with("//"))
            .any(|l| l == "#[test]")
    })
}

/// Names of every `fn` in `source`.
fn fn_names(source: &str) -> Vec<&str> {
    source
        .match_indices("fn ")
        .filter(|(at, _)| !source[..*at].chars().next_back().is_some_and(is_ident))
        .map(|(at, _)| {
            let name = &source[at + 3..];
            &name[..name.find(|c: char| !is_ident(c)).unwrap_or(name.len())]
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// Reads `path` under `root`, or says why not.
fn read(root: &Path, path: &str) -> Result<String, String> {
    std::fs::read_to_string(root.join(path)).map_err(|e| format!("cannot read `{path}`: {e}"))
}

/// Problems with one `cargo …` command of the command column.
fn check_command(root: &Path, command: &str) -> Vec<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    if words.first() != Some(&"cargo") {
        return vec![format!("command `{command}` is not a cargo command")];
    }
    // Only cargo's own arguments: what follows `--` goes to the program.
    let cargo_args = &words[..words.iter().position(|w| *w == "--").unwrap_or(words.len())];
    let value = |flag: &str| {
        cargo_args
            .iter()
            .position(|w| *w == flag)
            .map(|i| cargo_args.get(i + 1).copied())
    };
    let mut errors = Vec::new();
    match value("--example") {
        Some(Some(name))
            if !root.join(format!("examples/{name}.rs")).is_file()
                && !root.join(format!("examples/{name}/main.rs")).is_file() =>
        {
            errors.push(format!("example `examples/{name}.rs` does not exist"))
        }
        Some(None) => errors.push(format!("`{command}`: --example without a name")),
        _ => {}
    }
    let package = value("-p").flatten();
    if let Some(p) = package {
        if !root.join("crates").join(p).join("Cargo.toml").is_file() {
            errors.push(format!("package `{p}` is not in crates/"));
        }
    }
    if let Some(test) = value("--test") {
        let Some(test) = test else {
            errors.push(format!("`{command}`: --test without a name"));
            return errors;
        };
        let file = match package {
            Some(p) => format!("crates/{p}/tests/{test}.rs"),
            None => format!("tests/{test}.rs"),
        };
        match read(root, &file) {
            Err(_) => errors.push(format!("test target `{file}` does not exist")),
            Ok(source) => {
                // The test-name filter: the first word that is neither a flag nor a flag's value.
                let takes_value = ["-p", "--package", "--test", "--example", "--features"];
                let filter = cargo_args
                    .iter()
                    .enumerate()
                    .skip(2) // `cargo test`
                    .find(|(i, w)| !w.starts_with('-') && !takes_value.contains(&cargo_args[i - 1]))
                    .map(|(_, w)| w);
                if let Some(filter) = filter {
                    let names = fn_names(&source);
                    if !names
                        .iter()
                        .any(|n| n.contains(filter) && defines_test(&source, n))
                    {
                        errors.push(format!("no test in `{file}` matches the filter `{filter}`"));
                    }
                }
            }
        }
    }
    errors
}

/// Problems with one code link: the file must be a Rust file defining the name.
fn check_code_link(root: &Path, link: &Link) -> Option<String> {
    let name = link.code_name()?;
    let path = link.local_path()?;
    let source = match read(root, path) {
        Ok(s) => s,
        Err(_) => return None, // reported as a missing file
    };
    if !path.ends_with(".rs") {
        return Some(format!("`{name}` links to `{path}`, not a Rust file"));
    }
    let segments: Vec<&str> = name.trim_end_matches("()").split("::").collect();
    let last = segments.last().copied().unwrap_or(name);
    let items = ["fn", "struct", "enum", "trait", "const", "type", "mod"];
    if !defines(&source, last, &items) {
        return Some(format!("`{last}` is not defined in `{path}`"));
    }
    if let [.., owner, _] = segments[..] {
        let is_type = owner.chars().next().is_some_and(char::is_uppercase);
        if is_type && !defines(&source, owner, &["struct", "enum", "trait", "type"]) {
            return Some(format!("type `{owner}` is not defined in `{path}`"));
        }
    }
    None
}

/// Problems with one row of a map.
fn check_row(root: &Path, row: &Row) -> Vec<String> {
    let mut problems = Vec::new();
    if row.cells.len() != COLUMNS.len() {
        problems.push(format!(
            "{} cells, expected {} ({})",
            row.cells.len(),
            COLUMNS.len(),
            COLUMNS.join(" | ")
        ));
    }
    for (column, cell) in row.cells.iter().enumerate() {
        let name = COLUMNS.get(column).copied().unwrap_or("extra");
        if cell.is_empty() {
            problems.push(format!("the {name} cell is empty (write {NONE})"));
        }
        for link in links(cell) {
            if let Some(path) = link.local_path() {
                if !root.join(path).exists() {
                    problems.push(format!("{name}: `{path}` does not exist"));
                }
            }
        }
    }
    if row.cells.len() != COLUMNS.len() {
        return problems;
    }
    let code = row.cell(1);
    if code != NONE {
        let code_links: Vec<Link> = links(code)
            .into_iter()
            .filter(|l| l.code_name().is_some())
            .collect();
        if code_links.is_empty() {
            problems.push("code: no [`name`](file) link".into());
        }
        problems.extend(code_links.iter().filter_map(|l| check_code_link(root, l)));
    }
    let tests = row.cell(2);
    if tests != NONE {
        let test_links = links(tests);
        if test_links.is_empty() {
            problems.push("test: no [`test_name`](file) link".into());
        }
        for link in test_links {
            let (Some(name), Some(path)) = (link.code_name(), link.local_path()) else {
                problems.push(format!(
                    "test: `{}` is not a [`test_name`](file) link",
                    link.text
                ));
                continue;
            };
            if let Ok(source) = read(root, path) {
                if !defines_test(&source, name) {
                    problems.push(format!("test: no `#[test] fn {name}` in `{path}`"));
                }
            }
        }
    }
    let commands = row.commands();
    if row.cell(3) != NONE && commands.is_empty() {
        problems.push("command: no `cargo …` command".into());
    }
    for command in &commands {
        problems.extend(check_command(root, command));
    }
    let figure = row.cell(4);
    if figure != NONE {
        let figure_links = links(figure);
        if figure_links.is_empty() {
            problems.push("figure: no [text](file.png) link".into());
        }
        for link in figure_links {
            if !link.target.ends_with(".png") {
                problems.push(format!("figure: `{}` is not a PNG", link.target));
            }
        }
    }
    problems
}

/// Checks the map under `heading` in `markdown`; returns its rows and every problem found.
fn check_map(root: &Path, map: &str, markdown: &str, heading: &str) -> (Vec<Row>, Vec<String>) {
    let Some(text) = section(markdown, heading) else {
        return (Vec::new(), vec![format!("{map}: no `{heading}` section")]);
    };
    let mut errors = Vec::new();
    // Links outside the table (the prose) must resolve too.
    for link in text
        .lines()
        .filter(|l| !l.trim_start().starts_with('|'))
        .flat_map(links)
    {
        if let Some(path) = link.local_path() {
            if !root.join(path).exists() {
                errors.push(format!("{map}, text: `{path}` does not exist"));
            }
        }
    }
    let rows = table_rows(&text);
    if rows.is_empty() {
        errors.push(format!("{map}: `{heading}` holds no table rows"));
    }
    for row in &rows {
        errors.extend(
            check_row(root, row)
                .into_iter()
                .map(|p| format!("{map} row {} ({}): {p}", row.number, row.concept())),
        );
    }
    (rows, errors)
}

/// The two maps must have the same rows: same link targets and commands, row by row.
fn compare_maps(en: &[Row], ko: &[Row]) -> Vec<String> {
    let mut errors = Vec::new();
    if en.len() != ko.len() {
        errors.push(format!(
            "README.md's map has {} rows, README.ko.md's {}",
            en.len(),
            ko.len()
        ));
    }
    for (e, k) in en.iter().zip(ko) {
        if e.targets() != k.targets() {
            errors.push(format!(
                "row {} ({}): README.md links {:?}, README.ko.md links {:?}",
                e.number,
                e.concept(),
                e.targets(),
                k.targets()
            ));
        }
        if e.commands() != k.commands() {
            errors.push(format!(
                "row {} ({}): README.md runs {:?}, README.ko.md runs {:?}",
                e.number,
                e.concept(),
                e.commands(),
                k.commands()
            ));
        }
    }
    errors
}

#[test]
fn lecture_maps_link_only_what_exists_and_agree() {
    let en_md = read(root(), "README.md").unwrap();
    let ko_md = read(root(), "README.ko.md").unwrap();
    let (en, mut errors) = check_map(root(), "README.md", &en_md, EN_HEADING);
    let (ko, ko_errors) = check_map(root(), "README.ko.md", &ko_md, KO_HEADING);
    errors.extend(ko_errors);
    errors.extend(compare_maps(&en, &ko));
    assert!(
        errors.is_empty(),
        "the lecture map is stale ({} problems):\n{}",
        errors.len(),
        errors.join("\n")
    );
    assert!(
        ko_md.contains("](README.md") && en_md.contains("](README.ko.md)"),
        "README.md and README.ko.md must link each other"
    );
    println!(
        "lecture map: {} rows in each language, all links live",
        en.len()
    );
}

#[test]
fn the_checker_catches_broken_rows() {
    let good = "| a | [`convolve_full_1d`](crates/neka-lecture/src/conv.rs) \
        | [`one_d_convolution_flips_the_kernel`](crates/neka-lecture/tests/worked.rs) \
        | `cargo run --release --example conv_basics` | — |";
    let map = format!(
        "# x\n\n## Map\n\nSee [nowhere](docs/nowhere.md).\n\n\
         | concept | code | test | command | figure |\n|---|---|---|---|---|\n{good}\n\
         | b | [`no_such_fn`](crates/neka-lecture/src/conv.rs) | [`input`](crates/neka-lecture/tests/worked.rs) | `cargo run --example no_such_example` | [f](models/none.png) |\n\
         | c | [`convolve_full_1d`](crates/neka-cnn/src/missing.rs) | — | `cargo test -p neka-lstm --test recurrent no_such_test` | — |\n\
         | d | [`Nope::after`](crates/neka-cnn/src/arith.rs) | [`params_and_macs`](crates/neka-cnn/src/nope.rs) | — | — |\n\
         | e | — | — | — |\n\
         \n## Next\n\n| not | part | of | the | map |\n"
    );
    let (rows, errors) = check_map(root(), "test map", &map, "## Map");
    assert_eq!(rows.len(), 5, "{rows:?}");
    let expect = [
        "text: `docs/nowhere.md` does not exist",
        "row 2 (b): `no_such_fn` is not defined in `crates/neka-lecture/src/conv.rs`",
        "row 2 (b): test: no `#[test] fn input` in `crates/neka-lecture/tests/worked.rs`",
        "row 2 (b): example `examples/no_such_example.rs` does not exist",
        "row 2 (b): figure: `models/none.png` does not exist",
        "row 3 (c): code: `crates/neka-cnn/src/missing.rs` does not exist",
        "row 3 (c): no test in `crates/neka-lstm/tests/recurrent.rs` matches the filter `no_such_test`",
        "row 4 (d): type `Nope` is not defined in `crates/neka-cnn/src/arith.rs`",
        "row 4 (d): test: `crates/neka-cnn/src/nope.rs` does not exist",
        "row 5 (e): 4 cells, expected 5",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|got| got.contains(e)),
            "expected an error containing {e:?}, got:\n{}",
            errors.join("\n")
        );
    }
    assert_eq!(errors.len(), expect.len(), "{}", errors.join("\n"));

    // The good row alone passes, and a second map that differs from it is caught.
    let one = |row: &str| format!("## Map\n| c | c | t | c | f |\n|---|---|---|---|---|\n{row}\n");
    let (en, errors) = check_map(root(), "en", &one(good), "## Map");
    assert!(errors.is_empty(), "{errors:?}");
    let other = good.replace("conv_basics", "mnist_cnn").replace(
        "crates/neka-lecture/tests/worked.rs",
        "crates/neka-lecture/src/conv.rs",
    );
    let (ko, _) = check_map(root(), "ko", &one(&other), "## Map");
    let diff = compare_maps(&en, &ko);
    assert_eq!(diff.len(), 2, "{diff:?}");
    assert!(diff[0].contains("row 1 (a)") && diff[0].contains("tests/worked.rs"));
    assert!(diff[1].contains("mnist_cnn"));
    assert_eq!(compare_maps(&en, &[]).len(), 1);
}

/// The Markdown and Rust files whose text reaches users: the READMEs (root, crates, models,
/// fuzz, docs) and the examples' and the CLI's sources (their `--help` is their doc comments).
fn user_facing_files(root: &Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, ext: &str, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, ext, out);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    let mut files = vec![root.join("README.md"), root.join("README.ko.md")];
    for dir in ["crates", "models", "fuzz", "docs"] {
        let mut md = Vec::new();
        walk(&root.join(dir), "md", &mut md);
        files.extend(
            md.into_iter()
                .filter(|p| !p.components().any(|c| c.as_os_str() == "target")),
        );
    }
    walk(&root.join("examples"), "rs", &mut files);
    walk(&root.join("src"), "rs", &mut files);
    files.sort();
    files
}

#[test]
fn user_facing_text_never_assumes_this_checkouts_data_folder() {
    // `../shared` exists only beside this repository's own checkout: a command that names it
    // fails on a user's machine, where data comes from --data-dir, NEKA_DATA_DIR or the Hub.
    let needle = ["..", "shared"].join("/");
    let mut found = Vec::new();
    let files = user_facing_files(root());
    assert!(files.len() > 20, "found only {files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            if line.contains(&needle) {
                let rel = f.strip_prefix(root()).unwrap_or(&f).display().to_string();
                found.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "`{needle}` is this checkout's data folder, not a user's: use NEKA_DATA_DIR / --data-dir / the Hub in\n{}",
        found.join("\n")
    );
}

#[test]
fn the_first_screen_gives_the_two_commands_without_paths() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```sh block on the first screen");
    let commands: Vec<&str> = block
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        commands,
        ["cargo run --example mnist_cnn", "cargo test --workspace"],
        "README.md's first commands changed: .ci/run runs the second, and both must work as written"
    );
    assert!(
        readme.find("```sh").unwrap() < 1500,
        "the two commands must be on the first screen"
    );
}
