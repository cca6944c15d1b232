//! An image removed through the API while a guest has one of its files
//! open and mapped through the DAX window (docs/api.md, "What a removal
//! does to open files"): the name goes at once, the mapping stays until the
//! guest removes it, and the open file may still be mapped again (the
//! guest's SETUPMAPPING names no handle, only the node it holds), with its
//! true content. The test frontend plays the VMM.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;

use common::daemon::Daemon;
use common::dax::{remove, setup, take_events, FLAG_READ, RANGE};
use common::fixtures::fixture_image;
use common::frontend::{Frontend, FrontendOptions, WindowEvent};
use common::fuse_client::{FuseClient, ROOT_ID};

const WINDOW: u64 = 8 * RANGE;

/// One HTTP request on the API socket: (status, body).
fn api(sock: &Path, method: &str, target: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).expect("connect to the API");
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the reply");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned(),
    )
}

/// The bytes a SHMEM_MAP event carried.
fn mapped_bytes(events: &[WindowEvent]) -> &[u8] {
    match events {
        [WindowEvent::Map { bytes, .. }] => bytes,
        other => panic!("want one SHMEM_MAP, got {other:?}"),
    }
}

/// A non-empty regular file under `dir` (depth first): (node, size).
fn first_file(c: &mut FuseClient, dir: u64) -> Option<(u64, u64)> {
    let entries = c.list_dir(dir).expect("listing");
    for e in &entries {
        let a = &e.entry.attr;
        if a.mode & libc::S_IFMT == libc::S_IFREG && a.size > 0 {
            return Some((e.entry.nodeid, a.size));
        }
    }
    entries
        .iter()
        .filter(|e| e.entry.attr.mode & libc::S_IFMT == libc::S_IFDIR)
        .find_map(|e| first_file(c, e.entry.nodeid))
}

#[test]
fn test_removed_images_mapped_file_keeps_its_mapping_and_content() {
    let img = fixture_image("edge_plain-b4096");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("vhost.sock");
    let api_sock = dir.path().join("api.sock");
    let log = dir.path().join("daemon.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_erofs-virtiofsd"));
    cmd.arg("--socket-path")
        .arg(&socket)
        .arg("--tag")
        .arg("daxfs")
        .arg("--dax-window")
        .arg(WINDOW.to_string())
        .arg("--image")
        .arg(format!("layer={}", img.image.display()))
        .arg("--api-socket")
        .arg(&api_sock)
        .arg("--log-level")
        .arg("debug");
    let d = Daemon::spawn(cmd, socket, log, dir);
    let opts = FrontendOptions {
        shmem: true,
        ..Default::default()
    };
    let mut c = FuseClient::new(Frontend::connect(&d.socket, &opts));
    c.init();

    let top = c
        .lookup(ROOT_ID, b"layer")
        .expect("the image's directory")
        .nodeid;
    let (node, size) = first_file(&mut c, top).expect("a non-empty file in the image");
    let mut want = c.read_all(node).expect("read");
    assert_eq!(want.len() as u64, size);
    want.resize(RANGE as usize, 0);
    let fh = c.open(node, false).expect("open");
    setup(&mut c, node, 0, RANGE, 0, FLAG_READ)
        .unwrap_or_else(|e| panic!("SETUPMAPPING: {e}\n{}", d.log()));
    assert!(mapped_bytes(&take_events(&c)) == &want[..], "first mapping");

    let (st, body) = api(&api_sock, "DELETE", "/api/v1/mount?mountpoint=/layer");
    assert_eq!(st, 204, "DELETE: {body}");
    assert_eq!(
        c.lookup(ROOT_ID, b"layer").map(|e| e.nodeid),
        Err(libc::ENOENT),
        "the name is gone"
    );
    // Nothing was unmapped behind the guest's back.
    assert!(take_events(&c).is_empty(), "the removal touched the window");
    // The open file maps again, elsewhere in the window, with its content.
    setup(&mut c, node, 0, RANGE, RANGE, FLAG_READ)
        .unwrap_or_else(|e| panic!("SETUPMAPPING after the removal: {e}\n{}", d.log()));
    assert!(
        mapped_bytes(&take_events(&c)) == &want[..],
        "mapping after the removal"
    );
    let read = c.read(node, fh, 0, 4096).expect("READ of the open file");
    assert!(read[..] == want[..read.len()]);
    remove(&mut c, &[(0, RANGE), (RANGE, RANGE)]).expect("REMOVEMAPPING");
    let events = take_events(&c);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events
        .iter()
        .all(|e| matches!(e, WindowEvent::Unmap { len, .. } if *len == RANGE)));
    c.release(node, fh, false).expect("release");
    assert!(!d.log().contains("panicked"));
}
