//! Arbitrary bytes as an EROFS image: open, walk, and for (a bounded number
//! of) the inodes found read the data, list directories, read symlinks and
//! xattrs, look names up. Errors are fine; a panic, a hang or a huge
//! allocation is a bug. Seeds: small images by mkfs.erofs 1.9 of every
//! layout and algorithm (fuzz/corpus/erofs_image, see docs/fuzzing.md).
#![no_main]

use std::sync::Arc;

use erofs_virtiofsd::erofs::{self, Image, ImageOptions, InodeKind};
use erofs_virtiofsd::source::{MemorySource, Source};
use libfuzzer_sys::fuzz_target;

/// Inodes exercised per input.
const MAX_INODES: usize = 512;

/// Bytes read per file.
const MAX_FILE_BYTES: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let src: Arc<dyn Source> = Arc::new(MemorySource::from_vec(data.to_vec()));
    let opts = ImageOptions {
        decode_cache_bytes: Some(4 << 20),
        ..ImageOptions::default()
    };
    let Ok(img) = Image::open(src, opts) else {
        return;
    };
    let mut inodes = Vec::new();
    let _ = erofs::walk(
        &img,
        |e| {
            if inodes.len() < MAX_INODES {
                inodes.push(e.inode.clone());
            }
        },
        |_, _| {},
    );
    let mut buf = vec![0u8; 64 << 10];
    for ino in &inodes {
        match ino.kind {
            InodeKind::File => {
                let mut off = 0u64;
                while off < ino.size.min(MAX_FILE_BYTES) {
                    match img.read(ino, off, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => off += n as u64,
                    }
                }
                // A read from the middle (another extent path).
                let _ = img.read(ino, ino.size / 2, &mut buf[..4096]);
            }
            InodeKind::Dir => {
                let mut names = Vec::new();
                let _ = img.readdir(ino, 0, |e, _| {
                    if names.len() < 16 {
                        names.push(e.name.to_vec());
                    }
                    true
                });
                for n in &names {
                    let _ = img.lookup(ino, n);
                }
            }
            InodeKind::Symlink => {
                let _ = img.readlink(ino);
            }
            _ => {}
        }
        if let Ok(names) = img.list_xattr_names(ino) {
            for n in names.iter().take(8) {
                let _ = img.get_xattr(ino, n);
            }
        }
    }
});
