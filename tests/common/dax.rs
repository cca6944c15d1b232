//! FUSE DAX requests as a guest's virtiofs driver sends them, and what the
//! test frontend (as VMM) saw on its window.

use super::frontend::WindowEvent;
use super::fuse_client::FuseClient;

pub const SETUPMAPPING: u32 = 48;
pub const REMOVEMAPPING: u32 = 49;
pub const FLAG_WRITE: u64 = 1;
pub const FLAG_READ: u64 = 2;
/// The kernel's mapping unit (FUSE_DAX_SZ).
pub const RANGE: u64 = 2 << 20;

/// FUSE_SETUPMAPPING of `len` bytes of `node` at `foffset` into the window
/// at `moffset` (fh -1, as the guest sends it).
pub fn setup(
    c: &mut FuseClient,
    node: u64,
    foffset: u64,
    len: u64,
    moffset: u64,
    flags: u64,
) -> Result<(), i32> {
    let mut args = Vec::new();
    for v in [u64::MAX, foffset, len, flags, moffset] {
        args.extend_from_slice(&v.to_le_bytes());
    }
    c.call(SETUPMAPPING, node, &[&args], 0).map(drop)
}

/// FUSE_REMOVEMAPPING of `ranges` (window offset, length).
pub fn remove(c: &mut FuseClient, ranges: &[(u64, u64)]) -> Result<(), i32> {
    let mut args = (ranges.len() as u32).to_le_bytes().to_vec();
    for &(m, l) in ranges {
        args.extend_from_slice(&m.to_le_bytes());
        args.extend_from_slice(&l.to_le_bytes());
    }
    c.call(REMOVEMAPPING, 0, &[&args], 0).map(drop)
}

/// The SHMEM_MAP/SHMEM_UNMAP events the frontend recorded since last asked.
pub fn take_events(c: &FuseClient) -> Vec<WindowEvent> {
    std::mem::take(&mut c.fe.window.as_ref().expect("window").lock().unwrap().events)
}

/// Where the DAX tests make their content stores: `EROFS_TEST_STORE_BASE`
/// (e.g. a tmpfs mounted `huge=within_size`, as the daemon's default store
/// is when it mounts one) or `/dev/shm`.
pub fn store_base() -> std::path::PathBuf {
    std::env::var_os("EROFS_TEST_STORE_BASE")
        .map(Into::into)
        .unwrap_or_else(|| "/dev/shm".into())
}
