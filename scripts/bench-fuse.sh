#!/usr/bin/env bash
# FUSE benchmark: our `erofs-virtiofsd mount` against the kernel's EROFS
# driver, erofsfuse (the newest: Debian unstable's 1.9 series, unpacked by
# scripts/sid-tools.sh; or bookworm's 1.5 built from source) and
# squashfuse, side by side on the same images, in one run. Prints a markdown table (median of RUNS runs per
# backend, and ratios) and the exact commands used. Run as root.
#
# Rows:
#  seq   sequential read (dd bs=1M) of a big file; image hot in the page
#        cache, fresh mount per run ("hot"), or caches dropped after mounting
#        ("cold")
#  fio   FIO_IOS random 4 KiB reads (psync, fixed seed) of that file, fresh
#        mount per run, image hot
#  find  `find MNT -ls` of a fresh mount (cold inode and dentry caches)
#  tar   `tar -cf - -C MNT . | cat` (every file read; usr and the lz4 small
#        tree), fresh mount
#
# Images: a deterministic BIG_MIB MiB file of mixed data (random, text,
# records, zeros) and a deterministic tree of SMALL_FILES small files, both
# built with Debian's mkfs.erofs 1.5 (uncompressed, -zlz4, -zlz4hc); the
# fixtures big_lz4hc-C1m, big_zstd-dedupe-fragments and usr_zstd15-ztailpack
# (mkfs.erofs 1.5 cannot write zstd); the fixture usr tree rebuilt with
# mkfs.erofs 1.5. squashfuse reads a SquashFS image of the same tree,
# compressed to match (see the notes the run prints).
#
# Knobs: RUNS (5), BIG_MIB (384), SMALL_FILES (50000), PER_DIR (files per
# directory of the small tree, 500; 20 gives the 2,500-directory shape),
# EROFSFUSE_PEER (sid: Debian unstable's erofsfuse 1.9, the default;
# bookworm: 1.5 built from Debian 12's source), FIO_IOS (20000),
# COLD (1: also cold sequential rows), VERIFY (1: check each backend's
# content once per row), ONLY (regex on row names), BACKENDS ("ours kernel
# erofsfuse squashfuse"), OURS (target/release/erofs-virtiofsd), OURS_ARGS
# (extra `mount` options, e.g. "--threads 2 --cache auto"),
# BENCH_DIR (scratch, default target/bench-fuse), EROFS_FIXTURES
# (default tests/fixtures, built by scripts/fixtures.sh), RA_KB (if set: every mount, the kernel's and each
# FUSE daemon's, gets this `read_ahead_kb` after mounting; default: each
# keeps its own, ours sets 4096 itself), FIO_CPU (if set: fio runs under
# `taskset -c FIO_CPU`, a reader that stays on one CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

RUNS=${RUNS:-5}
BIG_MIB=${BIG_MIB:-384}
SMALL_FILES=${SMALL_FILES:-50000}
PER_DIR=${PER_DIR:-500}
EROFSFUSE_PEER=${EROFSFUSE_PEER:-sid}
FIO_IOS=${FIO_IOS:-20000}
COLD=${COLD:-1}
VERIFY=${VERIFY:-1}
ONLY=${ONLY:-.}
BACKENDS=${BACKENDS:-ours kernel erofsfuse squashfuse}
OURS=${OURS:-target/release/erofs-virtiofsd}
OURS_ARGS=${OURS_ARGS:-}
RA_KB=${RA_KB:-}
FIO_CPU=${FIO_CPU:-}
BENCH_DIR=${BENCH_DIR:-target/bench-fuse}
if [ -n "${EROFS_FIXTURES:-}" ]; then
  FIXTURES=$EROFS_FIXTURES/images
else
  FIXTURES=$(scripts/fixtures.sh)/images
fi
PY=/usr/bin/python3

if [ "$(id -u)" != 0 ]; then
  echo "bench-fuse.sh: mounts filesystems and drops caches; run as root" >&2
  exit 1
fi
t_start=$EPOCHREALTIME
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# Peers (erofsfuse built from Debian's source, squashfuse, fio) and tools.
peers_out=$(scripts/peers.sh)
case $EROFSFUSE_PEER in
  sid)
    sid_line=$(scripts/sid-tools.sh --quiet erofs | grep '^EROFSFUSE=')
    EROFSFUSE=${sid_line#EROFSFUSE=}
    # sid-tools.sh keeps "PACKAGE VERSION" lines of what it unpacked.
    erofsfuse_version=$(awk '$1 == "erofsfuse" { print $2 }' "$(dirname "$EROFSFUSE")/../erofs/versions" 2>/dev/null)
    erofsfuse_version=${erofsfuse_version:-1.9}
    erofsfuse_what="Debian unstable's package, unpacked by scripts/sid-tools.sh"
    ;;
  bookworm)
    EROFSFUSE=$(awk '$1 == "erofsfuse" {print $2}' <<<"$peers_out")
    erofsfuse_version=$(cat "$(dirname "$EROFSFUSE")/erofsfuse.version")
    erofsfuse_what="built from Debian 12's source, lz4+lzma"
    ;;
  *) echo "bench-fuse.sh: EROFSFUSE_PEER is sid or bookworm" >&2; exit 2 ;;
esac
command -v "$PY" >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null
}

mkdir -p "$BENCH_DIR"
W=$(cd "$BENCH_DIR" && pwd)
case $W in *[[:space:]]*)
  echo "bench-fuse.sh: BENCH_DIR must not contain white space ($W)" >&2
  exit 1
  ;;
esac
case $OURS in /*) ;; *) OURS=$repo/$OURS ;; esac
mkdir -p "$W/src" "$W/img" "$W/mnt" "$W/log"
log=$W/log
# One run at a time per scratch directory (they share images and mounts).
exec 9>"$W/.lock"
if ! flock -n 9; then
  echo "bench-fuse.sh: another run holds $W/.lock" >&2
  exit 1
fi

notes=()
commands=()
note() { notes+=("$*"); }
record() { commands+=("$*"); }

# ---------------------------------------------------------------- backends

ours_ok=0
if [[ " $BACKENDS " == *" ours "* ]]; then
  if [ ! -x "$OURS" ]; then
    note "ours: skipped: $OURS does not exist (build it with \`cargo build --release\`, or set OURS=)."
  elif ! "$OURS" mount --help >/dev/null 2>&1; then
    note "ours: skipped: $OURS has no \`mount\` subcommand yet (the column fills in once it has)."
  else
    ours_ok=1
  fi
fi
active=()
for b in $BACKENDS; do
  case $b in
    ours) [ "$ours_ok" = 1 ] && active+=(ours) ;;
    kernel | erofsfuse | squashfuse) active+=("$b") ;;
    *) echo "bench-fuse.sh: unknown backend $b" >&2; exit 1 ;;
  esac
done

# Mount points are canonical (no symlinks), as /proc/self/mountinfo shows them.
mnt_of() { echo "$W/mnt/$1"; }

is_mounted() {
  awk -v m="$1" '$5 == m {found = 1} END {exit !found}' /proc/self/mountinfo
}

# Polls mountinfo until MNT is a mount point; fails when PID (if given) dies
# first or after 30 s.
wait_mounted() {
  local mnt=$1 pid=${2:-} deadline=$((SECONDS + 30))
  while ! is_mounted "$mnt"; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.005
  done
}

# File-backed kernel mount: mount(2) with the image file as the source
# (Linux 6.12+), as util-linux 2.38 `mount` would set up a loop device.
kernel_mount() {
  "$PY" "$repo/scripts/mount-erofs-file.py" "$1" "$2" 2>>"$log/kernel-mount.log"
}

kernel_loop=0
declare -A fuse_pid=()

# erofs_bdis: the erofs-N bdis (one per file-backed EROFS mount), sorted.
erofs_bdis() {
  find /sys/class/bdi -maxdepth 1 -name 'erofs-*' -printf '%f\n' | sort
}

# mount_fs BACKEND IMAGE: mounts IMAGE at the backend's mount point.
mount_fs() {
  local b=$1 img=$2 mnt
  mnt=$(mnt_of "$b")
  mkdir -p "$mnt"
  is_mounted "$mnt" && umount_fs "$b"
  local bdis_before
  bdis_before=$(erofs_bdis)
  case $b in
    kernel)
      if ! kernel_mount "$img" "$mnt"; then
        if [ "$kernel_loop" = 0 ]; then
          kernel_loop=1
          note "kernel: file-backed mount(2) refused (see $log/kernel-mount.log); used \`mount -t erofs -o ro\` (loop device) instead."
        fi
        mount -t erofs -o ro "$img" "$mnt" || return 1
      fi
      ;;
    ours)
      # shellcheck disable=SC2086 # OURS_ARGS is a list of options
      "$OURS" mount --foreground $OURS_ARGS "$img" "$mnt" >>"$log/ours.log" 2>&1 &
      fuse_pid[$b]=$!
      ;;
    erofsfuse)
      "$EROFSFUSE" -f "$img" "$mnt" >>"$log/erofsfuse.log" 2>&1 &
      fuse_pid[$b]=$!
      ;;
    squashfuse)
      squashfuse -f "$img" "$mnt" >>"$log/squashfuse.log" 2>&1 &
      fuse_pid[$b]=$!
      ;;
  esac
  if ! wait_mounted "$mnt" "${fuse_pid[$b]:-}"; then
    umount_fs "$b"
    return 1
  fi
  if [ -n "$RA_KB" ]; then
    # After INIT (stat answers only then): the INIT reply caps it.
    stat "$mnt" >/dev/null
    local bdi
    if [ "$b" = kernel ]; then
      # A file-backed EROFS mount has a bdi of its own, erofs-N (its
      # st_dev is not a bdi): the one that appeared with this mount.
      bdi=$(comm -13 <(echo "$bdis_before") <(erofs_bdis) | head -n1)
      [ -n "$bdi" ] || bdi=$(mountpoint -d "$mnt")
    else
      bdi=$(mountpoint -d "$mnt")
    fi
    echo "$RA_KB" >"/sys/class/bdi/$bdi/read_ahead_kb"
  fi
}

# umount_fs BACKEND: unmounts and, for a FUSE daemon, waits for it to exit.
umount_fs() {
  local b=$1 mnt pid
  mnt=$(mnt_of "$b")
  if is_mounted "$mnt"; then
    umount "$mnt" 2>/dev/null || umount -l "$mnt"
  fi
  pid=${fuse_pid[$b]:-}
  if [ -n "$pid" ]; then
    # A FUSE daemon exits once unmounted; SIGTERM only if it lingers.
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.005; done
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "fuse_pid[$b]"
  fi
}

cleanup() {
  local b pid
  for b in kernel ours erofsfuse squashfuse extract; do
    [ -d "$(mnt_of "$b")" ] && umount_fs "$b"
  done
  for pid in "${fuse_pid[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ inputs

gen_version=2
stamp=$W/src/.stamp
want="gen=$gen_version big_mib=$BIG_MIB small_files=$SMALL_FILES per_dir=$PER_DIR"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bench: generating inputs ($want) in $W/src" >&2
  rm -rf "$W/src/big" "$W/src/small" "$W/img"
  mkdir -p "$W/img"
  # Deterministic: seeded PRNG, fixed times. big.bin mixes 1 MiB chunks:
  # 30% random bytes (incompressible), 35% text (lz4 in 4 KiB clusters: ~60%),
  # 25% JSON log lines (~30%), 10% zeros; small/ holds SMALL_FILES text files
  # of 0..32 KiB in PER_DIR-file directories.
  "$PY" - "$W/src" "$BIG_MIB" "$SMALL_FILES" "$PER_DIR" <<'PY'
import os, random, sys
root, big_mib, nfiles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
per_dir = int(sys.argv[4])
rng = random.Random(20240607)
vocab = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 10)))
         for _ in range(300)]
words = rng.choices(vocab, k=1_500_000)
pool = b" ".join(w + (b"\n" if i % 13 == 0 else b"") for i, w in enumerate(words))
MiB = 1 << 20
os.makedirs(f"{root}/big")
with open(f"{root}/big/big.bin", "wb") as f:
    for i in range(big_mib):
        kind = rng.random()
        if kind < 0.30:
            f.write(rng.randbytes(MiB))
        elif kind < 0.65:
            off = rng.randrange(len(pool) - MiB)
            f.write(pool[off:off + MiB])
        elif kind < 0.90:
            rec = bytearray()
            n = rng.randrange(1 << 20)
            while len(rec) < MiB:
                rec += (b'{"seq":%d,"ts":%d,"user":"%s","op":"%s","status":%d,"bytes":%d}\n'
                        % (n, 1700000000000 + n * 37, vocab[n % 97], vocab[n * 7 % 13],
                           404 if n % 11 == 0 else 200, n * 131 % 65536))
                n += 1
            f.write(bytes(rec[:MiB]))
        else:
            f.write(bytes(MiB))
for i in range(nfiles):
    d = f"{root}/small/d{i // per_dir:04d}"
    if i % per_dir == 0:
        os.makedirs(d)
    r = rng.random()
    size = rng.randrange(0, 1024) if r < 0.75 else (
        rng.randrange(1024, 8192) if r < 0.95 else rng.randrange(8192, 32768))
    off = rng.randrange(len(pool) - size)
    with open(f"{d}/f{i:06d}.txt", "wb") as f:
        f.write(pool[off:off + size])
t = 1700000000
for top in (f"{root}/big", f"{root}/small"):
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        for n in filenames:
            os.utime(os.path.join(dirpath, n), (t, t))
        os.utime(dirpath, (t, t))
PY
  echo "$want" >"$stamp"
fi
# The file whose time says when a tree under $W/src was last made.
tree_stamp() {
  case $1 in
    big | small) echo "$stamp" ;;
    *) echo "$W/src/.$1.done" ;;
  esac
}

# Trees of the fixtures, copied out through a kernel mount (for the SquashFS
# images of the same content, and to rebuild usr with mkfs.erofs 1.5).
extract_fixture() {
  local name=$1 dst=$W/src/$2 mnt
  [ -f "$W/src/.$2.done" ] && return 0
  [ -f "$FIXTURES/$name" ] || { echo "bench-fuse.sh: fixture $FIXTURES/$name missing (scripts/fixtures.sh builds them; or set EROFS_FIXTURES)" >&2; exit 1; }
  rm -rf "$dst"
  mkdir -p "$dst"
  mnt=$(mnt_of extract)
  mkdir -p "$mnt"
  kernel_mount "$FIXTURES/$name" "$mnt" || mount -t erofs -o ro "$FIXTURES/$name" "$mnt"
  cp -a "$mnt/." "$dst/"
  umount "$mnt"
  touch "$W/src/.$2.done"
}
extract_fixture usr_zstd15-ztailpack.erofs usr
extract_fixture big_lz4hc-C1m.erofs fx40m-lz4hc
extract_fixture big_zstd-dedupe-fragments.erofs fx40m-zstd

# build OUT SRCDIR TOOL ARGS...: builds once (cached beside the inputs).
build() {
  local name=$1 tree=$2 out=$W/img/$1 src=$W/src/$2 tool=$3
  shift 3
  if [ "$tool" = mkfs.erofs ]; then
    record "mkfs.erofs --quiet $* $out $src"
  else
    record "mksquashfs $src $out -noappend -quiet -no-progress $*"
  fi
  # Rebuilt when its input tree is newer.
  [ -s "$out" ] && [ "$out" -nt "$(tree_stamp "$tree")" ] && return 0
  echo "bench: building $(basename "$out")" >&2
  rm -f "$out.tmp"
  if [ "$tool" = mkfs.erofs ]; then
    mkfs.erofs --quiet "$@" "$out.tmp" "$src" >"$log/build-$name.log" 2>&1
  else
    mksquashfs "$src" "$out.tmp" -noappend -quiet -no-progress "$@" >"$log/build-$name.log" 2>&1
  fi
  mv "$out.tmp" "$out"
}
# Fixtures are used in place.
fixture() { echo "$FIXTURES/$1"; }

for t in big small usr; do
  build "$t-plain.erofs" "$t" mkfs.erofs
  build "$t-lz4.erofs" "$t" mkfs.erofs -zlz4
  build "$t-plain.sqfs" "$t" mksquashfs -noI -noD -noF -noX
  build "$t-lz4.sqfs" "$t" mksquashfs -comp lz4
done
build big-lz4hc.erofs big mkfs.erofs -zlz4hc
build big-lz4hc.sqfs big mksquashfs -comp lz4 -Xhc
build fx40m-lz4hc.sqfs fx40m-lz4hc mksquashfs -comp lz4 -Xhc -b 1M
build fx40m-zstd.sqfs fx40m-zstd mksquashfs -comp zstd -Xcompression-level 15
build usr-zstd.sqfs usr mksquashfs -comp zstd -Xcompression-level 15
note "SquashFS images: default 128 KiB blocks (1 MiB for the fx40m-lz4hc row, as its EROFS image uses -C1m), tail fragments on; 'plain' = -noI -noD -noF -noX (nothing compressed); lz4hc = -comp lz4 -Xhc; zstd = -comp zstd level 15. mkfs.erofs 1.5 compresses in 4 KiB physical clusters by default."
note "zstd rows use the fixtures (Debian's mkfs.erofs 1.5 cannot write zstd): big_zstd-dedupe-fragments (40 MiB file; fragments+dedupe, which erofsfuse 1.5 refuses: incompat feature 0x20) and usr_zstd15-ztailpack (erofsfuse 1.5 mounts it but cannot decode zstd, so it only gets the find row)."

t_inputs=$EPOCHREALTIME

# ---------------------------------------------------------------- measures

# heat FILE: reads it so it is in the host page cache.
heat() { cat "$1" >/dev/null; }

# op_run OP MNT ARG: runs the timed operation; prints seconds.
op_run() {
  local op=$1 mnt=$2 arg=$3 t0 t1
  case $op in
    seq | seqcold)
      t0=$EPOCHREALTIME
      dd if="$mnt/$arg" of=/dev/null bs=1M status=none || return 1
      t1=$EPOCHREALTIME
      ;;
    fio)
      # fio's own run time of the FIO_IOS reads (its start-up not counted).
      local out
      # shellcheck disable=SC2086 # the taskset prefix is a word list
      out=$(${FIO_CPU:+taskset -c $FIO_CPU} fio --name=rand4k --filename="$mnt/$arg" --readonly --rw=randread \
        --bs=4k --ioengine=psync --number_ios="$FIO_IOS" --randrepeat=1 \
        --randseed=42 --norandommap --output-format=terse --terse-version=3 \
        2>>"$log/fio.err") || return 1
      awk -F';' -v n="$FIO_IOS" '$5 != 0 || $8 * $9 == 0 {exit 1}
        {printf "%.6f\n", $9 / 1000}' <<<"$out" || return 1
      return 0
      ;;
    find)
      t0=$EPOCHREALTIME
      find "$mnt" -ls >/dev/null || return 1
      t1=$EPOCHREALTIME
      ;;
    tar)
      t0=$EPOCHREALTIME
      tar -C "$mnt" -cf - . 2>>"$log/tar.err" | cat >/dev/null || return 1
      t1=$EPOCHREALTIME
      ;;
  esac
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.6f\n", b - a}'
}

# op_fingerprint OP MNT ARG: content digest, to check a backend once per row.
op_fingerprint() {
  local op=$1 mnt=$2 arg=$3
  case $op in
    seq | seqcold | fio) md5sum <"$mnt/$arg" | cut -d' ' -f1 ;;
    # Directory sizes are format-specific: left out.
    find) (cd "$mnt" && find . \( -type d -printf '%P d %m\n' \) -o -printf '%P %y %s %m %l\n' |
      LC_ALL=C sort | md5sum | cut -d' ' -f1) ;;
    tar) (cd "$mnt" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 cat | md5sum | cut -d' ' -f1) ;;
  esac
}

# measure BACKEND IMAGE OP ARG: one fresh mount, one timed op; sets M_T to
# the seconds (not in a subshell: it owns the FUSE daemon it starts).
M_T=
measure() {
  local b=$1 img=$2 op=$3 arg=$4 mnt rc=0
  mnt=$(mnt_of "$b")
  M_T=
  mount_fs "$b" "$img" || return 1
  if [ "$op" = seqcold ]; then
    sync
    echo 3 >/proc/sys/vm/drop_caches
  fi
  M_T=$(op_run "$op" "$mnt" "$arg") || rc=1
  umount_fs "$b"
  return "$rc"
}

# median / minimum of the numbers on stdin (one line of space-separated).
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END {
  if (NR == 0) exit 1
  if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
minimum() { tr ' ' '\n' | grep . | sort -g | awk 'NR == 1 {printf "%.3f", $1}'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {
  if (a == "" || b == "" || a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b == 0) print "–"; else printf "%.2f", a / b }'; }

table=()
# row NAME OP ARG EROFS_IMAGE SQFS_IMAGE [BACKEND_TO_SKIP:REASON ...]
row() {
  local name=$1 op=$2 arg=$3 eimg=$4 simg=$5
  shift 5
  [[ $name =~ $ONLY ]] || return 0
  declare -A skip=() times=() med=() ref=()
  local s b img run
  for s in "$@"; do
    if [ -n "$s" ]; then skip[${s%%:*}]=${s#*:}; fi
  done
  echo "bench: $name" >&2
  heat "$eimg"
  heat "$simg"
  for b in "${active[@]}"; do
    [ -n "${skip[$b]:-}" ] && continue
    img=$eimg
    [ "$b" = squashfuse ] && img=$simg
    # Untimed warm-up run that checks the content against the kernel's.
    if [ "$VERIFY" = 1 ]; then
      if mount_fs "$b" "$img"; then
        ref[$b]=$(op_fingerprint "$op" "$(mnt_of "$b")" "$arg" 2>>"$log/verify.err") || ref[$b]=error
        umount_fs "$b"
      else
        ref[$b]=nomount
      fi
    fi
  done
  for b in "${active[@]}"; do
    if [ "$VERIFY" != 1 ] || [ -n "${skip[$b]:-}" ]; then continue; fi
    if [ "${ref[$b]}" = nomount ] || [ "${ref[$b]}" = error ]; then
      skip[$b]="${ref[$b]}"
    elif [ -n "${ref[kernel]:-}" ] && [ "$b" != kernel ] && [ "${ref[$b]}" != "${ref[kernel]}" ]; then
      note "$name: $b's content differs from the kernel's (digest ${ref[$b]} vs ${ref[kernel]}); its figure is marked !"
      med[$b.bad]=1
    fi
  done
  for ((run = 0; run < RUNS; run++)); do
    for b in "${active[@]}"; do
      [ -n "${skip[$b]:-}" ] && continue
      img=$eimg
      [ "$b" = squashfuse ] && img=$simg
      [ "$op" = seqcold ] || heat "$img"
      if measure "$b" "$img" "$op" "$arg"; then
        times[$b]+="$M_T "
      else
        skip[$b]="failed (run $((run + 1)))"
      fi
    done
  done
  local cells=() m
  for b in ours kernel erofsfuse squashfuse; do
    if [[ " ${active[*]} " != *" $b "* ]]; then
      m="–"
    elif [ -n "${skip[$b]:-}" ]; then
      m="n/a"
      note "$name: $b: ${skip[$b]}"
    else
      med[$b]=$(median <<<"${times[$b]}")
      m="${med[$b]} ($(minimum <<<"${times[$b]}"))"
      [ -n "${med[$b.bad]:-}" ] && m="$m !"
    fi
    cells+=("$m")
  done
  table+=("| $name | ${cells[0]} | ${cells[1]} | ${cells[2]} | ${cells[3]} | $(ratio "${med[erofsfuse]:-}" "${med[ours]:-}") | $(ratio "${med[ours]:-}" "${med[kernel]:-}") | $(ratio "${med[erofsfuse]:-}" "${med[kernel]:-}") | $(ratio "${med[squashfuse]:-}" "${med[kernel]:-}") |")
  # Progress: the row so far.
  echo "${table[-1]}" >&2
}

I=$W/img
big_label="${BIG_MIB} MiB"
no_zstd="" no_frag=""
if [ "$EROFSFUSE_PEER" = bookworm ]; then
  no_zstd="erofsfuse:unsupported (zstd)"
  no_frag="erofsfuse:unsupported (fragments, zstd)"
fi
small_label="$SMALL_FILES files in $(( (SMALL_FILES + PER_DIR - 1) / PER_DIR )) dirs"

row "seq hot, $big_label, plain" seq big.bin "$I/big-plain.erofs" "$I/big-plain.sqfs"
row "seq hot, $big_label, lz4" seq big.bin "$I/big-lz4.erofs" "$I/big-lz4.sqfs"
row "seq hot, $big_label, lz4hc" seq big.bin "$I/big-lz4hc.erofs" "$I/big-lz4hc.sqfs"
row "seq hot, 40 MiB fixture lz4hc-C1m" seq mixed_40m "$(fixture big_lz4hc-C1m.erofs)" "$I/fx40m-lz4hc.sqfs"
row "seq hot, 40 MiB fixture zstd" seq mixed_40m "$(fixture big_zstd-dedupe-fragments.erofs)" "$I/fx40m-zstd.sqfs" "$no_frag"
if [ "$COLD" = 1 ]; then
  row "seq cold, $big_label, plain" seqcold big.bin "$I/big-plain.erofs" "$I/big-plain.sqfs"
  row "seq cold, $big_label, lz4" seqcold big.bin "$I/big-lz4.erofs" "$I/big-lz4.sqfs"
  row "seq cold, $big_label, lz4hc" seqcold big.bin "$I/big-lz4hc.erofs" "$I/big-lz4hc.sqfs"
fi
row "fio rand 4k ×$FIO_IOS, $big_label, plain" fio big.bin "$I/big-plain.erofs" "$I/big-plain.sqfs"
row "fio rand 4k ×$FIO_IOS, $big_label, lz4" fio big.bin "$I/big-lz4.erofs" "$I/big-lz4.sqfs"
row "fio rand 4k ×$FIO_IOS, $big_label, lz4hc" fio big.bin "$I/big-lz4hc.erofs" "$I/big-lz4hc.sqfs"
row "fio rand 4k ×$FIO_IOS, 40 MiB fixture zstd" fio mixed_40m "$(fixture big_zstd-dedupe-fragments.erofs)" "$I/fx40m-zstd.sqfs" "$no_frag"
row "find -ls, usr fixture zstd15" find - "$(fixture usr_zstd15-ztailpack.erofs)" "$I/usr-zstd.sqfs"
row "find -ls, usr plain" find - "$I/usr-plain.erofs" "$I/usr-plain.sqfs"
row "find -ls, usr lz4" find - "$I/usr-lz4.erofs" "$I/usr-lz4.sqfs"
row "find -ls, $small_label, plain" find - "$I/small-plain.erofs" "$I/small-plain.sqfs"
row "find -ls, $small_label, lz4" find - "$I/small-lz4.erofs" "$I/small-lz4.sqfs"
row "tar, usr fixture zstd15" tar - "$(fixture usr_zstd15-ztailpack.erofs)" "$I/usr-zstd.sqfs" "$no_zstd"
row "tar, usr lz4" tar - "$I/usr-lz4.erofs" "$I/usr-lz4.sqfs"
row "tar, $small_label, plain" tar - "$I/small-plain.erofs" "$I/small-plain.sqfs"
row "tar, $small_label, lz4" tar - "$I/small-lz4.erofs" "$I/small-lz4.sqfs"

# ------------------------------------------------------------------ report

t_end=$EPOCHREALTIME
echo
echo "## FUSE benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); load average $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end)"
echo
echo "Seconds, median (min) of $RUNS runs per backend, after one untimed checking run (VERIFY=1); a fresh mount per run; the image hot in the page cache except in 'seq cold' rows. Ratios are of the medians, A/B > 1 means A is slower: erofsfuse/ours is our speed-up over erofsfuse, ours/kernel our slow-down against the kernel. '–': not run; 'n/a': the backend cannot read that image (see notes); '!': content differs from the kernel's."
echo
echo "| row | ours | kernel | erofsfuse $erofsfuse_version | squashfuse | erofsfuse/ours | ours/kernel | erofsfuse/kernel | squashfuse/kernel |"
echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|"
printf '%s\n' "${table[@]}"
echo
echo "Versions: erofsfuse $erofsfuse_version ($erofsfuse_what), squashfuse $(dpkg-query -W -f='${Version}' squashfuse), mkfs.erofs $(dpkg-query -W -f='${Version}' erofs-utils), squashfs-tools $(dpkg-query -W -f='${Version}' squashfs-tools), $(fio --version); ours: $(if [ "$ours_ok" = 1 ]; then "$OURS" --version 2>/dev/null || echo "$OURS"; else echo 'not run'; fi)."
echo
echo "Notes:"
printf -- '- %s\n' "${notes[@]}"
echo
ra_text="each backend's own (the kernel and the peers 128 KiB; ours sets 4096 KiB on its mount)"
[ -n "$RA_KB" ] && ra_text="every mount's \`read_ahead_kb\` set to $RA_KB after mounting"
cpu_text="any (the scheduler's choice)"
[ -n "$FIO_CPU" ] && cpu_text="\`taskset -c $FIO_CPU\` (fio stays on CPU $FIO_CPU)"
echo "Commands (IMG = the row's image, MNT = a mount point):"
for c in "${commands[@]}"; do echo "- \`$c\`"; done
cat <<EOF
- kernel: \`mount(2)\` with source=IMG, type erofs, MS_RDONLY (file-backed; python3 ctypes); fallback \`mount -t erofs -o ro IMG MNT\`; \`umount MNT\`
- ours: \`$OURS mount --foreground${OURS_ARGS:+ $OURS_ARGS} IMG MNT &\`; \`umount MNT\`; wait for it to exit
- erofsfuse: \`$EROFSFUSE -f IMG MNT &\`; \`umount MNT\`
- squashfuse: \`squashfuse -f IMG.sqfs MNT &\`; \`umount MNT\`
- mounted when MNT appears in /proc/self/mountinfo (polled)
- hot: \`cat IMG >/dev/null\` before each run; cold: \`sync; echo 3 >/proc/sys/vm/drop_caches\` after mounting
- seq: \`dd if=MNT/FILE of=/dev/null bs=1M status=none\`
- fio: \`fio --name=rand4k --filename=MNT/FILE --readonly --rw=randread --bs=4k --ioengine=psync --number_ios=$FIO_IOS --randrepeat=1 --randseed=42 --norandommap --output-format=terse --terse-version=3\` (time = fio's read run time)
- find: \`find MNT -ls >/dev/null\`
- tar: \`tar -C MNT -cf - . | cat >/dev/null\`
- readahead: $ra_text
- fio CPU: $cpu_text
- check (VERIFY=1, untimed, once per backend and row): md5 of FILE; of \`find . \\( -type d -printf '%P d %m\\n' \\) -o -printf '%P %y %s %m %l\\n' | sort\`; of every file's bytes in name order
EOF
echo
awk -v a="$t_start" -v i="$t_inputs" -v b="$t_end" -v k="RUNS=$RUNS BIG_MIB=$BIG_MIB SMALL_FILES=$SMALL_FILES PER_DIR=$PER_DIR EROFSFUSE_PEER=$EROFSFUSE_PEER FIO_IOS=$FIO_IOS COLD=$COLD VERIFY=$VERIFY" \
  'BEGIN {printf "Run time: %.0f s, of which %.0f s making inputs and images (%s)\n", b - a, i - a, k}'
