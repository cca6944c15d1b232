//! `erofs-virtiofsd image ...`: inspect an image without mounting it.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;

use super::json::{backslash_replace, hex};
use super::manifest;
use super::source::ImageSource;
use crate::erofs::{self, Image, Inode, InodeKind};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Show the superblock and features.
    Info {
        #[command(flatten)]
        src: ImageSource,
    },
    /// List a directory.
    Ls {
        /// Long listing (mode, links, owner, size, mtime).
        #[arg(short = 'l')]
        long: bool,
        #[command(flatten)]
        src: ImageSource,
        /// Directory inside the image.
        #[arg(default_value = "/")]
        path: PathBuf,
    },
    /// Show an inode's attributes.
    Stat {
        #[command(flatten)]
        src: ImageSource,
        /// Path inside the image.
        path: PathBuf,
    },
    /// Write a file's content to stdout.
    Cat {
        #[command(flatten)]
        src: ImageSource,
        /// Path inside the image.
        path: PathBuf,
    },
    /// List a path's extended attributes with their values.
    Xattr {
        #[command(flatten)]
        src: ImageSource,
        /// Path inside the image.
        path: PathBuf,
    },
    /// Walk every inode and read every byte; report every problem.
    Check {
        #[command(flatten)]
        src: ImageSource,
    },
    /// Print one JSON line per path (the test fixtures' manifest format).
    Manifest {
        #[command(flatten)]
        src: ImageSource,
        /// Refuse to hash regular files larger than this many bytes (a
        /// corrupt size could otherwise mean hashing exabytes of holes).
        #[arg(long, value_name = "BYTES", default_value_t = 64 << 30)]
        max_file_size: u64,
    },
}

impl ImageCommand {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let out = std::io::stdout();
        let mut out = std::io::BufWriter::new(out.lock());
        let code = match self {
            ImageCommand::Info { src } => info(&src.open()?, &mut out)?,
            ImageCommand::Ls { long, src, path } => ls(&src.open()?, &path, long, &mut out)?,
            ImageCommand::Stat { src, path } => stat(&src.open()?, &path, &mut out)?,
            ImageCommand::Cat { src, path } => cat(&src.open()?, &path, &mut out)?,
            ImageCommand::Xattr { src, path } => xattrs(&src.open()?, &path, &mut out)?,
            ImageCommand::Check { src } => check(&src.open()?, &mut out)?,
            ImageCommand::Manifest { src, max_file_size } => {
                manifest_cmd(&src.open()?, max_file_size, &mut out)?
            }
        };
        out.flush()?;
        Ok(code)
    }
}

/// A name or path for human-readable output: bytes of invalid UTF-8 and
/// ASCII control characters (a newline in a file name) as `\xNN`, other
/// control characters as `\u{NN}`, so that every path and every problem
/// stays on one line.
fn show(b: &[u8]) -> String {
    let text = backslash_replace(b).0;
    if !text.chars().any(char::is_control) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_ascii_control() {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Resolves an absolute path inside the image (no symlinks followed).
pub fn resolve(img: &Image, path: &std::path::Path) -> anyhow::Result<Inode> {
    let mut cur = img.inode(img.root_nid())?;
    let mut walked = Vec::new();
    for comp in path.as_os_str().as_bytes().split(|&b| b == b'/') {
        if comp.is_empty() || comp == b"." {
            continue;
        }
        walked.push(b'/');
        walked.extend_from_slice(comp);
        if !cur.is_dir() {
            bail!("{}: not a directory", show(&walked));
        }
        let Some((nid, _)) = img.lookup(&cur, comp).with_context(|| show(&walked))? else {
            bail!("{}: no such file or directory", show(&walked));
        };
        cur = img.inode(nid).with_context(|| show(&walked))?;
    }
    Ok(cur)
}

fn info(img: &Image, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let sb = img.superblock();
    let uuid = hex(&sb.uuid);
    writeln!(out, "magic:              0xe0f5e1e2 (EROFS)")?;
    writeln!(out, "block size:         {}", sb.block_size())?;
    writeln!(out, "blocks:             {}", sb.blocks)?;
    writeln!(out, "inodes:             {}", sb.inos)?;
    writeln!(out, "root nid:           {}", sb.root_nid)?;
    writeln!(out, "meta blkaddr:       {}", sb.meta_blkaddr)?;
    writeln!(out, "xattr blkaddr:      {}", sb.xattr_blkaddr)?;
    writeln!(
        out,
        "uuid:               {}-{}-{}-{}-{}",
        &uuid[0..8],
        &uuid[8..12],
        &uuid[12..16],
        &uuid[16..20],
        &uuid[20..32]
    )?;
    writeln!(out, "volume name:        {}", show(&sb.volume_name))?;
    writeln!(out, "epoch:              {}.{:09}", sb.epoch, sb.fixed_nsec)?;
    writeln!(out, "feature compat:     {:#x}", sb.feature_compat)?;
    writeln!(out, "feature incompat:   {:#x}", sb.feature_incompat)?;
    writeln!(out, "features:           {}", sb.feature_names().join(" "))?;
    if let Some(c) = sb.checksum {
        writeln!(out, "checksum:           {c:#010x} (verified)")?;
    }
    if sb.packed_nid != 0 {
        writeln!(out, "packed nid:         {}", sb.packed_nid)?;
    }
    if let Some(m) = sb.metabox_nid {
        writeln!(out, "metabox nid:        {m}")?;
    }
    writeln!(out, "long xattr prefixes: {}", sb.xattr_prefix_count)?;
    writeln!(out, "extra devices:      {}", sb.extra_devices)?;
    for (i, d) in img.devices().iter().enumerate() {
        writeln!(
            out,
            "  device {}: tag {:?} blocks {} uniaddr {}",
            i + 1,
            show(&d.tag),
            d.blocks,
            d.uniaddr
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn mode_string(mode: u32) -> String {
    let t = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let on = mode & bit != 0;
        let special = match i {
            2 => (mode & 0o4000 != 0).then_some(if on { 's' } else { 'S' }),
            5 => (mode & 0o2000 != 0).then_some(if on { 's' } else { 'S' }),
            8 => (mode & 0o1000 != 0).then_some(if on { 't' } else { 'T' }),
            _ => None,
        };
        s.push(special.unwrap_or(if on { *c } else { '-' }));
    }
    s
}

fn long_line(img: &Image, ino: &Inode, name: &[u8]) -> anyhow::Result<String> {
    let size = match ino.kind {
        InodeKind::CharDev | InodeKind::BlockDev => {
            format!("{}, {}", ino.rdev_major(), ino.rdev_minor())
        }
        _ => ino.size.to_string(),
    };
    let mut l = format!(
        "{} {:>3} {:>5} {:>5} {:>10} {}.{:09} {}",
        mode_string(ino.mode),
        ino.nlink,
        ino.uid,
        ino.gid,
        size,
        ino.mtime,
        ino.mtime_nsec,
        show(name)
    );
    if ino.kind == InodeKind::Symlink {
        l.push_str(" -> ");
        l.push_str(&show(&img.readlink(ino)?));
    }
    Ok(l)
}

fn ls(
    img: &Image,
    path: &std::path::Path,
    long: bool,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let dir = resolve(img, path)?;
    if !dir.is_dir() {
        let name = path.as_os_str().as_bytes();
        if long {
            writeln!(out, "{}", long_line(img, &dir, name)?)?;
        } else {
            writeln!(out, "{}", show(name))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut entries = Vec::new();
    img.readdir(&dir, 0, |e, _| {
        entries.push((e.name.to_vec(), e.nid));
        true
    })
    .with_context(|| show(path.as_os_str().as_bytes()))?;
    for (name, nid) in entries {
        if long {
            let ino = img
                .inode(nid)
                .with_context(|| format!("{}: nid {nid}", show(&name)))?;
            writeln!(out, "{}", long_line(img, &ino, &name)?)?;
        } else {
            writeln!(out, "{}", show(&name))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn stat(img: &Image, path: &std::path::Path, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let ino = resolve(img, path)?;
    writeln!(out, "path:    {}", show(path.as_os_str().as_bytes()))?;
    writeln!(out, "nid:     {}", ino.nid)?;
    writeln!(out, "type:    {}", manifest::type_name(ino.kind))?;
    writeln!(out, "mode:    {:o} ({})", ino.mode, mode_string(ino.mode))?;
    writeln!(out, "uid:     {}", ino.uid)?;
    writeln!(out, "gid:     {}", ino.gid)?;
    writeln!(out, "nlink:   {}", ino.nlink)?;
    writeln!(out, "size:    {}", ino.size)?;
    writeln!(out, "blocks:  {}", ino.blocks_512(img.blkszbits()))?;
    writeln!(out, "mtime:   {}.{:09}", ino.mtime, ino.mtime_nsec)?;
    let layout = match ino.layout {
        erofs::ondisk::LAYOUT_FLAT_PLAIN => "flat plain",
        erofs::ondisk::LAYOUT_FLAT_INLINE => "flat inline (tail-packed)",
        erofs::ondisk::LAYOUT_CHUNK_BASED => "chunk-based",
        erofs::ondisk::LAYOUT_COMPRESSED_FULL => "compressed (full indexes)",
        _ => "compressed (compact indexes)",
    };
    writeln!(out, "layout:  {layout}")?;
    writeln!(
        out,
        "inode:   {}",
        if ino.extended {
            "extended (64 bytes)"
        } else {
            "compact (32 bytes)"
        }
    )?;
    match ino.kind {
        InodeKind::CharDev | InodeKind::BlockDev => {
            writeln!(out, "rdev:    {}:{}", ino.rdev_major(), ino.rdev_minor())?
        }
        InodeKind::Symlink => writeln!(out, "target:  {}", show(&img.readlink(&ino)?))?,
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn cat(img: &Image, path: &std::path::Path, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let ino = resolve(img, path)?;
    match ino.kind {
        InodeKind::File => {}
        InodeKind::Symlink => bail!("{}: is a symlink (use stat)", path.display()),
        InodeKind::Dir => bail!("{}: is a directory", path.display()),
        _ => bail!("{}: not a regular file", path.display()),
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < ino.size {
        let n = img
            .read(&ino, off, &mut buf)
            .with_context(|| format!("{} at byte {off}", path.display()))?;
        if n == 0 {
            bail!("{}: short read at byte {off}", path.display());
        }
        out.write_all(&buf[..n])?;
        off += n as u64;
    }
    Ok(ExitCode::SUCCESS)
}

fn xattrs(img: &Image, path: &std::path::Path, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let ino = resolve(img, path)?;
    for x in img.xattrs(&ino)? {
        let (name, hidden) = match x.full_name() {
            Some(n) => (show(&n), ""),
            None => (
                format!("[index {}] {}", x.index, show(&x.suffix)),
                " (hidden)",
            ),
        };
        let (text, valid) = backslash_replace(&x.value);
        if valid && !text.chars().any(|c| c.is_control()) {
            writeln!(out, "{name}=\"{text}\"{hidden}")?;
        } else {
            writeln!(out, "{name}=0x{}{hidden}", hex(&x.value))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads everything an inode holds (holes are skipped, not read); returns
/// the first problem.
fn check_inode(img: &Image, ino: &Inode) -> anyhow::Result<()> {
    match ino.kind {
        InodeKind::File => {
            let mut buf = vec![0u8; ino.size.min(1 << 20) as usize];
            let mut pos = 0u64;
            while pos < ino.size {
                let (start, len, hole) = img
                    .extent_at(ino, pos)
                    .with_context(|| format!("mapping byte {pos}"))?;
                let end = start.saturating_add(len).min(ino.size);
                while !hole && pos < end {
                    let want = (end - pos).min(buf.len() as u64) as usize;
                    let n = img
                        .read(ino, pos, &mut buf[..want])
                        .with_context(|| format!("reading byte {pos}"))?;
                    if n == 0 {
                        bail!("short read at byte {pos}");
                    }
                    pos += n as u64;
                }
                pos = pos.max(end);
            }
        }
        InodeKind::Symlink => {
            img.readlink(ino)?;
        }
        _ => {}
    }
    for name in img.list_xattr_names(ino)? {
        if img.get_xattr(ino, &name)?.is_none() {
            bail!("xattr {} listed but not found by name", show(&name));
        }
    }
    Ok(())
}

/// Walks the image checking each path as it is found (nothing is kept but
/// the problems).
fn check(img: &Image, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    let mut count = 0u64;
    let mut inode_problems = Vec::new();
    erofs::walk(
        img,
        |e| {
            count += 1;
            if let Err(err) = check_inode(img, &e.inode) {
                inode_problems.push(format!("{}: {err:#}", show(&e.path)));
            }
        },
        |p, e| problems.push(format!("{}: {e}", show(p))),
    )?;
    problems.append(&mut inode_problems);
    for p in &problems {
        writeln!(out, "{p}")?;
    }
    if problems.is_empty() {
        writeln!(out, "ok: {count} paths checked, no problems")?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(out, "{} problem(s) in {count} paths", problems.len())?;
        Ok(ExitCode::FAILURE)
    }
}

fn manifest_cmd(img: &Image, max_file_size: u64, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    erofs::walk(
        img,
        |e| entries.push(e.clone()),
        |p, e| problems.push(format!("{}: {e}", show(p))),
    )?;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    for e in &entries {
        match manifest::line(img, &e.path, &e.inode, max_file_size) {
            Ok(l) => writeln!(out, "{l}")?,
            Err(err) => problems.push(format!("{}: {err:#}", show(&e.path))),
        }
    }
    if problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    out.flush()?;
    // Not `eprintln!`, which panics when stderr cannot be written; the exit
    // code still reports the problems.
    let mut err = std::io::stderr().lock();
    for p in &problems {
        let _ = writeln!(err, "erofs-virtiofsd: {p}");
    }
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::show;

    #[test]
    fn test_show_control_characters_escaped_on_one_line() {
        assert_eq!(show(b"/names/new\nline"), "/names/new\\x0aline");
        assert_eq!(show(b"/a\x01\x7f\tb"), "/a\\x01\\x7f\\x09b");
        assert_eq!(show("/c\u{85}d".as_bytes()), "/c\\u{85}d");
        assert_eq!(show(b"/bad\xff/\xe9t\xe9"), "/bad\\xff/\\xe9t\\xe9");
        assert_eq!(show("/ok é 日本".as_bytes()), "/ok é 日本");
    }
}
