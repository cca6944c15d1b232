//! The dispatcher's fuzz harness (`cfg(test)` or the `test-utils`
//! feature): raw request bytes through a fresh session over a built-in
//! image, with the protocol's invariants checked on every reply, and seed
//! inputs for the fuzz target.

use std::sync::Arc;

use super::testutil::{
    init_request, memory_image, request, split_reply, KERNEL_FLAGS, TINY_IMAGE, TINY_LZ4_IMAGE,
};

/// One fuzz input run through a fresh server.
///
/// Layout: a selector byte (bit 0: compressed image; bits 1-2: cache
/// policy; bit 6: replies in 4 KiB buffers; bit 7: no INIT first), then
/// records of a little-endian `u16` length (bit 15: overwrite the request's
/// `len` with the record length) followed by that many request bytes.
/// Panics only when a reply breaks the protocol (a malformed header, a
/// positive error, a reply to a request that wants none): that is what
/// the fuzz target looks for. Returns how many replies were successes.
pub fn fuzz_dispatch(data: &[u8]) -> usize {
    use super::{CachePolicy, RepliesOnly, Session, Share, ShareOptions, VecSink};
    let Some((&sel, mut rest)) = data.split_first() else {
        return 0;
    };
    let bytes = if sel & 1 == 0 {
        TINY_IMAGE
    } else {
        TINY_LZ4_IMAGE
    };
    let cache = match (sel >> 1) & 3 {
        0 => CachePolicy::Never,
        1 => CachePolicy::Auto,
        _ => CachePolicy::Always,
    };
    let Ok(img) = memory_image(bytes) else {
        return 0;
    };
    let opts = ShareOptions {
        cache,
        max_handles: 8,
        ..ShareOptions::default()
    };
    let Ok(share) = Share::new(img, opts) else {
        return 0;
    };
    let srv = Session::new(Arc::new(share), Arc::new(RepliesOnly));
    let mut ok = 0usize;
    let mut sink = VecSink {
        replies: Vec::new(),
        chunk: if sel & 0x40 != 0 { 4096 } else { 0 },
    };
    if sel & 0x80 == 0 {
        let _ = srv.handle(&init_request(1, KERNEL_FLAGS), &mut sink);
        sink.replies.clear();
    }
    while let Some((head, body)) = rest.split_first_chunk::<2>() {
        let raw = u16::from_le_bytes(*head);
        let n = usize::from(raw & 0x7fff).min(body.len());
        let (req, tail) = body.split_at(n);
        rest = tail;
        let mut req = req.to_vec();
        if raw & 0x8000 != 0 {
            if let Some(len) = req.get_mut(..4) {
                len.copy_from_slice(&u32::try_from(n).unwrap_or(0).to_ne_bytes());
            }
        }
        let _ = srv.handle(&req, &mut sink);
        check_replies(&req, &sink.replies);
        ok = ok.saturating_add(
            sink.replies
                .iter()
                .filter(|r| split_reply(r).is_some_and(|(h, _)| h.error == 0))
                .count(),
        );
        sink.replies.clear();
    }
    ok
}

/// Protocol invariants of the replies to one request.
fn check_replies(req: &[u8], replies: &[Vec<u8>]) {
    assert!(
        replies.len() <= 1,
        "{} replies to one request",
        replies.len()
    );
    let Some(r) = replies.first() else {
        return;
    };
    let (h, _) = split_reply(r).expect("reply shorter than its header");
    assert_eq!(h.len as usize, r.len(), "reply len field");
    assert!(h.error <= 0 && h.error > -4096, "error {}", h.error);
    if h.error != 0 {
        assert_eq!(r.len(), super::OUT_HEADER_LEN, "error reply with a payload");
    }
    if let Some(u) = req.get(8..16) {
        let mut b = [0u8; 8];
        b.copy_from_slice(u);
        assert_eq!(h.unique, u64::from_ne_bytes(b), "reply to another request");
    }
}

/// Seed inputs for the fuzz target: well-formed sessions over every
/// opcode the server handles.
pub fn fuzz_seeds() -> Vec<Vec<u8>> {
    use zerocopy::IntoBytes;

    use super::abi::*;

    let Ok(img) = memory_image(TINY_IMAGE) else {
        return Vec::new();
    };
    let Ok(root) = img.inode(img.root_nid()) else {
        return Vec::new();
    };
    let node = |name: &[u8]| {
        img.lookup(&root, name)
            .ok()
            .flatten()
            .map_or(0, |(nid, _)| nid.saturating_add(2))
    };
    let (hello, big, link, dir) = (node(b"hello"), node(b"big"), node(b"link"), node(b"dir"));
    let read_in = |fh: u64, offset: u64, size: u32| ReadIn {
        fh,
        offset,
        size,
        ..Default::default()
    };
    let gx = GetxattrIn {
        size: 64,
        padding: 0,
    };
    let sessions: Vec<(u8, Vec<Vec<u8>>)> = vec![
        (
            // Files, no-open mode off (cache auto).
            2,
            vec![
                request(LOOKUP, 1, 2, &[b"hello\0"]),
                request(GETATTR, hello, 3, &[GetattrIn::default().as_bytes()]),
                request(OPEN, hello, 4, &[OpenIn::default().as_bytes()]),
                request(READ, hello, 5, &[read_in(1, 0, 4096).as_bytes()]),
                request(
                    FLUSH,
                    hello,
                    6,
                    &[FlushIn {
                        fh: 1,
                        ..Default::default()
                    }
                    .as_bytes()],
                ),
                request(
                    RELEASE,
                    hello,
                    7,
                    &[ReleaseIn {
                        fh: 1,
                        ..Default::default()
                    }
                    .as_bytes()],
                ),
                request(GETXATTR, hello, 8, &[gx.as_bytes(), b"user.test\0"]),
                request(LISTXATTR, hello, 9, &[gx.as_bytes()]),
                request(FORGET, hello, 10, &[ForgetIn { nlookup: 1 }.as_bytes()]),
            ],
        ),
        (
            // Directories and links, compressed image.
            3,
            vec![
                request(OPENDIR, 1, 2, &[OpenIn::default().as_bytes()]),
                request(READDIR, 1, 3, &[read_in(1, 0, 4096).as_bytes()]),
                request(READDIRPLUS, 1, 4, &[read_in(1, 3, 4096).as_bytes()]),
                request(
                    RELEASEDIR,
                    1,
                    5,
                    &[ReleaseIn {
                        fh: 1,
                        ..Default::default()
                    }
                    .as_bytes()],
                ),
                request(LOOKUP, 1, 6, &[b"link\0"]),
                request(READLINK, link, 7, &[]),
                request(LOOKUP, 1, 8, &[b"dir\0"]),
                request(LOOKUP, dir, 9, &[b"inner\0"]),
                request(STATFS, 1, 10, &[]),
                request(
                    ACCESS,
                    1,
                    11,
                    &[AccessIn {
                        mask: 4,
                        padding: 0,
                    }
                    .as_bytes()],
                ),
            ],
        ),
        (
            // Zero-message opens (cache always), seeks, batch forget.
            4,
            vec![
                request(LOOKUP, 1, 2, &[b"big\0"]),
                request(READ, big, 3, &[read_in(0, 4000, 1 << 20).as_bytes()]),
                request(
                    LSEEK,
                    big,
                    4,
                    &[LseekIn {
                        fh: 0,
                        offset: 5,
                        whence: 4,
                        padding: 0,
                    }
                    .as_bytes()],
                ),
                request(STATX, big, 5, &[StatxIn::default().as_bytes()]),
                request(
                    BATCH_FORGET,
                    0,
                    6,
                    &[
                        BatchForgetIn { count: 1, dummy: 0 }.as_bytes(),
                        ForgetOne {
                            nodeid: big,
                            nlookup: 1,
                        }
                        .as_bytes(),
                    ],
                ),
                request(INTERRUPT, 0, 7, &[InterruptIn { unique: 3 }.as_bytes()]),
                request(SYNCFS, 1, 8, &[SyncfsIn::default().as_bytes()]),
                request(DESTROY, 0, 9, &[]),
                init_request(10, KERNEL_FLAGS),
                request(MKDIR, 1, 11, &[&[0u8; 8], b"x\0"]),
            ],
        ),
    ];
    sessions
        .into_iter()
        .map(|(sel, reqs)| {
            let mut v = vec![sel];
            for r in reqs {
                let n = u16::try_from(r.len()).unwrap_or(0x7fff) & 0x7fff;
                v.extend_from_slice(&n.to_le_bytes());
                v.extend_from_slice(&r);
            }
            v
        })
        .collect()
}
