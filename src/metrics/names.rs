//! Names of FUSE opcodes, as `<linux/fuse.h>` spells them without the
//! `FUSE_` prefix, for labels in what the metrics show.

/// Names indexed by opcode; `None` where the protocol has no opcode.
const NAMES: [Option<&str>; 54] = [
    None,
    Some("LOOKUP"),
    Some("FORGET"),
    Some("GETATTR"),
    Some("SETATTR"),
    Some("READLINK"),
    Some("SYMLINK"),
    None,
    Some("MKNOD"),
    Some("MKDIR"),
    Some("UNLINK"),
    Some("RMDIR"),
    Some("RENAME"),
    Some("LINK"),
    Some("OPEN"),
    Some("READ"),
    Some("WRITE"),
    Some("STATFS"),
    Some("RELEASE"),
    None,
    Some("FSYNC"),
    Some("SETXATTR"),
    Some("GETXATTR"),
    Some("LISTXATTR"),
    Some("REMOVEXATTR"),
    Some("FLUSH"),
    Some("INIT"),
    Some("OPENDIR"),
    Some("READDIR"),
    Some("RELEASEDIR"),
    Some("FSYNCDIR"),
    Some("GETLK"),
    Some("SETLK"),
    Some("SETLKW"),
    Some("ACCESS"),
    Some("CREATE"),
    Some("INTERRUPT"),
    Some("BMAP"),
    Some("DESTROY"),
    Some("IOCTL"),
    Some("POLL"),
    Some("NOTIFY_REPLY"),
    Some("BATCH_FORGET"),
    Some("FALLOCATE"),
    Some("READDIRPLUS"),
    Some("RENAME2"),
    Some("LSEEK"),
    Some("COPY_FILE_RANGE"),
    Some("SETUPMAPPING"),
    Some("REMOVEMAPPING"),
    Some("SYNCFS"),
    Some("TMPFILE"),
    Some("STATX"),
    Some("COPY_FILE_RANGE_64"),
];

/// The label of a table slot: the opcode's name, `OP_<n>` for a slot the
/// protocol leaves unnamed, `OTHER` for slot 0 (opcode 0 and every opcode
/// past the table).
pub fn opcode_name(slot: usize) -> std::borrow::Cow<'static, str> {
    if slot == 0 {
        return "OTHER".into();
    }
    match NAMES.get(slot) {
        Some(Some(n)) => (*n).into(),
        _ => format!("OP_{slot}").into(),
    }
}
