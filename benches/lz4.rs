//! `cargo bench --bench lz4`: our LZ4 block decoder (what lz4 and lz4hc
//! images store) against `lz4_flex`'s, on the same blocks, in process.
//!
//! Inputs, both always at hand: this benchmark's own executable (machine
//! code with debug info, like the shared libraries of a `/usr` image) and
//! the crate's Rust sources (text). Each is cut into pclusters of
//! `BENCH_BLOCK` bytes (default 4096, what `mkfs.erofs -zlz4` makes without
//! `-C`) and each pcluster compressed with `lz4_flex` (the same block
//! format as liblz4). Ours decodes through the public
//! [`Decoder::decompress`] of an image with zero padding (exact decoding,
//! the kernel's `LZ4_decompress_safe` rules), `lz4_flex` through
//! `block::decompress_into`. Before timing, both decodes of every block
//! must equal the input.
//!
//! The sides run in turn (ours, lz4_flex, ours, ...) `BENCH_RUNS` times
//! (default 15), each run decoding every block `BENCH_PASSES` times
//! (default 10); printed: decoded MiB/s of the median and best run per
//! side, and ours / lz4_flex of the medians (above 1: we are faster).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use erofs_virtiofsd::erofs::decompress::{Algorithm, Configs, Decoder};

fn env_usize(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name}={v}: not a whole number")),
        Err(_) => Ok(default),
    }
}

/// Every `.rs` file under `dir`, in name order.
fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_sources(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

struct Blocks {
    name: String,
    raw: Vec<Vec<u8>>,
    packed: Vec<Vec<u8>>,
}

impl Blocks {
    fn new(name: &str, data: &[u8], block: usize) -> Self {
        let raw: Vec<Vec<u8>> = data.chunks(block).map(<[u8]>::to_vec).collect();
        let packed = raw.iter().map(|c| lz4_flex::block::compress(c)).collect();
        Blocks {
            name: name.to_string(),
            raw,
            packed,
        }
    }

    fn bytes(&self) -> usize {
        self.raw.iter().map(Vec::len).sum()
    }
}

fn ours(dec: &Decoder, b: &Blocks, out: &mut [u8]) -> Result<(), String> {
    for (p, r) in b.packed.iter().zip(&b.raw) {
        let o = out
            .get_mut(..r.len())
            .ok_or("block larger than the buffer")?;
        dec.decompress(Algorithm::Lz4, black_box(p), o, false)
            .map_err(|e| format!("ours: {e}"))?;
    }
    Ok(())
}

fn flex(b: &Blocks, out: &mut [u8]) -> Result<(), String> {
    for (p, r) in b.packed.iter().zip(&b.raw) {
        let o = out
            .get_mut(..r.len())
            .ok_or("block larger than the buffer")?;
        lz4_flex::block::decompress_into(black_box(p), o).map_err(|e| format!("lz4_flex: {e}"))?;
    }
    Ok(())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn run() -> Result<(), String> {
    let runs = env_usize("BENCH_RUNS", 15)?.max(1);
    let passes = env_usize("BENCH_PASSES", 10)?.max(1);
    let block = env_usize("BENCH_BLOCK", 4096)?.max(16);
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let code = std::fs::read(&exe).map_err(|e| format!("{}: {e}", exe.display()))?;
    let mut files = Vec::new();
    rust_sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    )?;
    let mut text = Vec::new();
    for f in &files {
        text.extend(std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?);
    }
    let sets = [
        Blocks::new("machine code (this executable)", &code, block),
        Blocks::new("text (the crate's sources)", &text, block),
    ];
    let dec = Decoder {
        configs: Configs::default(),
        zero_padding: true,
        block_size: block,
    };
    let mut out = vec![0u8; block];
    println!(
        "lz4 block decoding, {block}-byte blocks, {runs} runs of {passes} passes per side, \
         sides in turn; MiB/s of the decoded bytes"
    );
    println!(
        "{:<34} {:>8} {:>8} {:>14} {:>14} {:>9}",
        "input", "MiB", "ratio", "ours med (max)", "flex med (max)", "ours/flex"
    );
    for set in &sets {
        for (p, r) in set.packed.iter().zip(&set.raw) {
            let o = out
                .get_mut(..r.len())
                .ok_or("block larger than the buffer")?;
            dec.decompress(Algorithm::Lz4, p, o, false)
                .map_err(|e| format!("{}: ours: {e}", set.name))?;
            if o != r.as_slice() {
                return Err(format!("{}: ours decoded other bytes", set.name));
            }
            lz4_flex::block::decompress_into(p, o).map_err(|e| format!("lz4_flex: {e}"))?;
            if o != r.as_slice() {
                return Err(format!("{}: lz4_flex decoded other bytes", set.name));
            }
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let t = Instant::now();
            for _ in 0..passes {
                ours(&dec, set, &mut out)?;
            }
            a.push(t.elapsed());
            let t = Instant::now();
            for _ in 0..passes {
                flex(set, &mut out)?;
            }
            b.push(t.elapsed());
        }
        let mib = (set.bytes() * passes) as f64 / (1u64 << 20) as f64;
        let rate = |d: Duration| mib / d.as_secs_f64().max(1e-9);
        let (best_a, best_b) = (
            a.iter().min().copied().unwrap_or_default(),
            b.iter().min().copied().unwrap_or_default(),
        );
        let (ma, mb) = (median(&mut a), median(&mut b));
        let packed: usize = set.packed.iter().map(Vec::len).sum();
        println!(
            "{:<34} {:>8.1} {:>8.2} {:>6.0} ({:>5.0}) {:>6.0} ({:>5.0}) {:>9.2}",
            set.name,
            set.bytes() as f64 / (1u64 << 20) as f64,
            set.bytes() as f64 / packed.max(1) as f64,
            rate(ma),
            rate(best_a),
            rate(mb),
            rate(best_b),
            rate(ma) / rate(mb)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench lz4: error: {e}");
            ExitCode::FAILURE
        }
    }
}
