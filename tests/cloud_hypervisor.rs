//! cloud-hypervisor needs KVM, which this machine lacks, so the daemon is
//! driven with cloud-hypervisor's own vhost-user message sequence
//! (`common::chv`): its set-up order and offered features, memory hotplug
//! by ADD_MEM_REG, and its reconnect after a hang-up, with 1 and 4
//! request queues. Every request queue reads a fixture bit-exact (the
//! whole tree on one, a file on each other); after the hotplug the replies
//! land in the new memory; after the reconnect the same again.

mod common;

use std::path::Path;

use common::daemon::Daemon;
use common::fixtures::fixture_image;
use common::frontend::{Frontend, FrontendOptions, RAM_BASE, RAM_SIZE};
use common::fuse_client::{walk_from, FuseClient, ROOT_ID};
use common::manifest::{hex, Entry};
use common::{assert_manifests_eq, load_expected};
use sha2::{Digest, Sha256};

const FIXTURE: &str = "edge_lz4";

/// Where the hotplugged RAM goes: past the boot RAM, with a hole.
const HOTPLUG_GPA: u64 = RAM_BASE + RAM_SIZE as u64 + (64 << 20);
const HOTPLUG_SIZE: usize = 32 << 20;

/// The regular files of the manifest with their contents' SHA-256, the
/// largest first.
fn files(expected: &[Entry]) -> Vec<(Vec<u8>, String)> {
    let mut v: Vec<(u64, Vec<u8>, String)> = expected
        .iter()
        .filter(|e| e.kind() == "reg")
        .map(|e| {
            (
                e.get("size").and_then(|s| s.as_u64()).unwrap_or(0),
                e.raw_path.clone(),
                e.get("sha256")
                    .and_then(|s| s.as_str())
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.0));
    v.into_iter().map(|(_, p, h)| (p, h)).collect()
}

/// Looks `path` up from the root and reads it whole; its SHA-256.
fn read_path(c: &mut FuseClient, path: &[u8]) -> String {
    let mut node = ROOT_ID;
    for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
        node = c
            .lookup(node, part)
            .unwrap_or_else(|e| panic!("LOOKUP {}: errno {e}", String::from_utf8_lossy(part)))
            .nodeid;
    }
    let data = c.read_all(node).expect("read the file");
    hex(&Sha256::digest(&data))
}

/// Every request queue reads the file at `files[i % n]`; queue 1 walks the
/// whole tree too.
fn check_all_queues(c: &mut FuseClient, queues: usize, what: &str) {
    let expected = load_expected(FIXTURE);
    let files = files(&expected);
    for q in 1..=queues {
        c.queue = q;
        let (path, want) = &files[(q - 1) % files.len()];
        assert_eq!(
            &read_path(c, path),
            want,
            "{what}: queue {q}: {}",
            String::from_utf8_lossy(path)
        );
    }
    c.queue = 1;
    assert_manifests_eq(
        &format!("{what}: walk over the first request queue vs the manifest of {FIXTURE}"),
        &expected,
        &walk_from(c, ROOT_ID),
    );
}

fn run(request_queues: usize) {
    let fx = fixture_image(FIXTURE);
    let q = request_queues.to_string();
    let d = Daemon::start(&fx.image, &["--queues", &q]);
    let opts = FrontendOptions {
        num_queues: 1 + request_queues,
        queue_size: 1024,
        ..FrontendOptions::default()
    };
    let (fe, agreed) = Frontend::connect_like_cloud_hypervisor(&d.socket, &opts);
    // What the daemon agreed to of what cloud-hypervisor offers.
    assert!(agreed.queue_num >= opts.num_queues as u64);
    let mut c = FuseClient::new(fe);
    c.init();
    check_all_queues(&mut c, request_queues, "after set-up");

    // Memory hotplug: the replies now land in the new region.
    c.fe.hotplug_memory(HOTPLUG_GPA, HOTPLUG_SIZE);
    let at = c.fe.alloc(64);
    assert!(
        (HOTPLUG_GPA..HOTPLUG_GPA + HOTPLUG_SIZE as u64).contains(&at),
        "buffers come from the hotplugged region"
    );
    check_all_queues(&mut c, request_queues, "after ADD_MEM_REG");

    // A hang-up, then cloud-hypervisor's reconnect on the same rings and
    // memory (the hotplugged region included): a new FUSE session.
    c.fe.hang_up(&d.socket);
    reconnect(&mut c, &d.socket, &agreed);
    c.lookups.clear();
    c.init();
    check_all_queues(&mut c, request_queues, "after the reconnect");

    let log = d.log();
    assert!(!log.contains("panicked"), "daemon log:\n{log}");
    assert!(
        log.matches("frontend connected").count() >= 2,
        "daemon log:\n{log}"
    );
}

fn reconnect(c: &mut FuseClient, socket: &Path, agreed: &common::chv::Agreed) {
    c.fe.reconnect_like_cloud_hypervisor(socket, agreed);
}

#[test]
fn test_cloud_hypervisor_sequence_one_request_queue() {
    run(1);
}

#[test]
fn test_cloud_hypervisor_sequence_four_request_queues() {
    run(4);
}
