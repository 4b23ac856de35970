//! The JPEG structure check behind [`super::decode`]: a cut file or a frame whose size was
//! changed is an error naming it, never gray or blank rows.

/// Checks that the JPEG `bytes` are whole: walks the segments by their lengths and, for a
/// baseline (sequential) frame, Huffman-decodes every scan's blocks without computing pixels,
/// counting them: each scan must hold exactly the frame's `⌈W/8H⌉ × ⌈H/8V⌉` MCUs (or the
/// component's own block count for a single-component scan), no fewer (a cut file, or a frame
/// size made larger: the decoder would fill the rest with gray) and no more than padding
/// after them (a frame size made smaller). Then an end-of-image marker must follow. A
/// progressive frame is only checked for the end-of-image marker.
pub(super) fn jpeg_scan_ends(bytes: &[u8]) -> std::result::Result<(), String> {
    let cut = "the JPEG is cut off (an incomplete download or upload?)";
    let mut frame: Option<JpegFrame> = None;
    let mut tables: [Option<Huffman>; 8] = Default::default(); // DC 0–3, AC 0–3
    let mut restart = 0usize;
    let mut at = 2; // after SOI
    loop {
        let marker = match bytes.get(at..at + 2) {
            Some([0xff, 0xff]) => {
                at += 1; // fill byte
                continue;
            }
            Some([0xff, m]) => *m,
            Some(_) => return Err(format!("the JPEG is corrupt: no marker at byte {at}")),
            None => {
                return Err(format!(
                    "{cut}: it ends at byte {} without an end-of-image marker",
                    bytes.len()
                ))
            }
        };
        if marker == 0xd9 {
            return Ok(());
        }
        if (0xd0..=0xd7).contains(&marker) || marker == 0x01 {
            at += 2; // stray restart or TEM: no length
            continue;
        }
        let len = match bytes.get(at + 2..at + 4) {
            Some(l) => usize::from(u16::from_be_bytes([l[0], l[1]])),
            None => return Err(format!("{cut}: it ends inside a segment header")),
        };
        let Some(seg) = bytes.get(at + 4..at + 2 + len.max(2)) else {
            return Err(format!(
                "{cut}: its segment FF{marker:02X} at byte {at} is not whole"
            ));
        };
        at += 2 + len;
        let corrupt = || format!("the JPEG is corrupt: segment FF{marker:02X} is malformed");
        match marker {
            0xc0..=0xc2 => frame = Some(JpegFrame::parse(seg, marker == 0xc2).ok_or_else(corrupt)?),
            0xc4 => {
                let mut s = seg;
                while !s.is_empty() {
                    let (class, id) = (usize::from(s[0] >> 4), usize::from(s[0] & 15));
                    let counts = s.get(1..17).ok_or_else(corrupt)?;
                    let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    let symbols = s.get(17..17 + n).ok_or_else(corrupt)?;
                    if class > 1 || id > 3 {
                        return Err(corrupt());
                    }
                    tables[class * 4 + id] = Some(Huffman::new(counts, symbols));
                    s = &s[17 + n..];
                }
            }
            0xdd => {
                restart = usize::from(u16::from_be_bytes([
                    seg.first().copied().ok_or_else(corrupt)?,
                    seg.get(1).copied().ok_or_else(corrupt)?,
                ]))
            }
            0xda => {
                let Some(f) = frame.as_ref() else {
                    return Err("the JPEG is corrupt: a scan before its frame header".into());
                };
                let data_end = if f.progressive {
                    bytes[at..]
                        .windows(2)
                        .position(|w| w[0] == 0xff && w[1] != 0 && !(0xd0..=0xd7).contains(&w[1]))
                        .map_or(bytes.len(), |p| at + p)
                } else {
                    at + count_scan(&bytes[at..], seg, f, &tables, restart)?
                };
                at = data_end;
            }
            _ => {}
        }
    }
}

/// A JPEG frame header: size and each component's `(id, h, v)` sampling factors.
struct JpegFrame {
    width: usize,
    height: usize,
    components: Vec<(u8, usize, usize)>,
    progressive: bool,
}

impl JpegFrame {
    fn parse(seg: &[u8], progressive: bool) -> Option<Self> {
        let height = usize::from(u16::from_be_bytes([*seg.get(1)?, *seg.get(2)?]));
        let width = usize::from(u16::from_be_bytes([*seg.get(3)?, *seg.get(4)?]));
        let n = usize::from(*seg.get(5)?);
        let components = (0..n)
            .map(|i| {
                let c = seg.get(6 + 3 * i..9 + 3 * i)?;
                let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
                (1..=4).contains(&h).then_some(())?;
                (1..=4).contains(&v).then_some(())?;
                Some((c[0], h, v))
            })
            .collect::<Option<Vec<_>>>()?;
        (!components.is_empty()).then_some(Self {
            width,
            height,
            components,
            progressive,
        })
    }
}

/// A canonical Huffman table (JPEG F.2.2.3): the largest code of each length and where its
/// symbols start.
#[derive(Clone)]
struct Huffman {
    max_code: [i32; 17],
    first: [i32; 17],
    offset: [usize; 17],
    symbols: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8], symbols: &[u8]) -> Self {
        let (mut max_code, mut first, mut offset) = ([-1i32; 17], [0i32; 17], [0usize; 17]);
        let (mut code, mut k) = (0i32, 0usize);
        for l in 1..=16 {
            let n = usize::from(counts[l - 1]);
            first[l] = code;
            offset[l] = k;
            if n > 0 {
                code += n as i32;
                k += n;
                max_code[l] = code - 1;
            }
            code <<= 1;
        }
        Self {
            max_code,
            first,
            offset,
            symbols: symbols.to_vec(),
        }
    }

    fn decode(&self, bits: &mut ScanBits) -> Option<u8> {
        let mut code = 0i32;
        for l in 1..=16 {
            code = (code << 1) | bits.bit()? as i32;
            if code <= self.max_code[l] {
                // a malformed (over-subscribed) table can put `code` below its length's first
                let i = usize::try_from(code - self.first[l]).ok()?;
                return self.symbols.get(self.offset[l] + i).copied();
            }
        }
        None
    }
}

/// The bits of a scan's entropy-coded data (FF 00 is a data FF); stops at any marker.
struct ScanBits<'a> {
    data: &'a [u8],
    at: usize,
    byte: u8,
    left: u8,
}

impl ScanBits<'_> {
    fn bit(&mut self) -> Option<u8> {
        if self.left == 0 {
            let b = *self.data.get(self.at)?;
            if b == 0xff {
                if *self.data.get(self.at + 1)? != 0 {
                    return None; // a marker: the data ends here
                }
                self.at += 1;
            }
            self.at += 1;
            self.byte = b;
            self.left = 8;
        }
        self.left -= 1;
        Some((self.byte >> self.left) & 1)
    }

    fn skip(&mut self, n: u8) -> Option<()> {
        (0..n).try_for_each(|_| self.bit().map(|_| ()))
    }
}

/// Decodes the blocks of one baseline scan (header `sos`) from `data` (what follows it),
/// checking their count against frame `f`; returns where the scan data ends (its next marker).
fn count_scan(
    data: &[u8],
    sos: &[u8],
    f: &JpegFrame,
    tables: &[Option<Huffman>; 8],
    restart: usize,
) -> std::result::Result<usize, String> {
    let corrupt = |what: &str| format!("the JPEG is corrupt: {what}");
    let n = usize::from(*sos.first().ok_or_else(|| corrupt("empty scan header"))?);
    let (h_max, v_max) = f
        .components
        .iter()
        .fold((1, 1), |(h, v), c| (h.max(c.1), v.max(c.2)));
    // each scan component: blocks per MCU, DC table, AC table
    let mut parts = Vec::new();
    let mut blocks_alone = 0;
    for i in 0..n {
        let c = sos
            .get(1 + 2 * i..3 + 2 * i)
            .ok_or_else(|| corrupt("short scan header"))?;
        let (_, h, v) = *f
            .components
            .iter()
            .find(|x| x.0 == c[0])
            .ok_or_else(|| corrupt("a scan of a component the frame does not have"))?;
        let (dc, ac) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
        let table = |i: usize| {
            tables
                .get(i)
                .and_then(Option::as_ref)
                .ok_or_else(|| corrupt("a scan without its Huffman table"))
        };
        let (dc, ac) = (table(dc.min(3))?, table(4 + ac.min(3))?);
        // a single-component scan has no padding MCUs: the component's own blocks
        let (cw, ch) = (
            (f.width * h).div_ceil(h_max),
            (f.height * v).div_ceil(v_max),
        );
        blocks_alone = cw.div_ceil(8) * ch.div_ceil(8);
        parts.push((if n == 1 { 1 } else { h * v }, dc, ac));
    }
    let mcus = if n == 1 {
        blocks_alone
    } else {
        f.width.div_ceil(8 * h_max) * f.height.div_ceil(8 * v_max)
    };
    let mut bits = ScanBits {
        data,
        at: 0,
        byte: 0,
        left: 0,
    };
    let ran_out = |m: usize| {
        format!(
            "the JPEG is cut off or its frame size is wrong: its scan data ends after {m} of the \
             {mcus} blocks a {}x{} frame needs",
            f.width, f.height
        )
    };
    for m in 0..mcus {
        if restart > 0 && m > 0 && m % restart == 0 {
            // byte-aligned restart marker FF D0–D7
            bits.left = 0;
            match data.get(bits.at..bits.at + 2) {
                Some([0xff, r]) if (0xd0..=0xd7).contains(r) => bits.at += 2,
                _ => return Err(ran_out(m)),
            }
        }
        for &(count, dc, ac) in &parts {
            for _ in 0..count {
                let s = dc.decode(&mut bits).ok_or_else(|| ran_out(m))?;
                bits.skip(s & 15).ok_or_else(|| ran_out(m))?;
                let mut k = 1;
                while k < 64 {
                    let rs = ac.decode(&mut bits).ok_or_else(|| ran_out(m))?;
                    let (r, s) = (rs >> 4, rs & 15);
                    if s == 0 && r != 15 {
                        break; // end of block
                    }
                    k += usize::from(r) + 1;
                    bits.skip(s).ok_or_else(|| ran_out(m))?;
                }
            }
        }
    }
    // after the last block: at most the bits that pad its byte, then a marker
    match data.get(bits.at..bits.at + 2) {
        Some([0xff, m]) if *m != 0 => Ok(bits.at),
        None => Err(
            "the JPEG is cut off (an incomplete download or upload?): it ends right after its \
             scan data, without an end-of-image marker"
                .into(),
        ),
        _ => Err(format!(
            "the JPEG's frame size is wrong or its data corrupt: its scan data goes on after \
             the {mcus} blocks a {}x{} frame holds",
            f.width, f.height
        )),
    }
}
