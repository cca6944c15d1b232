#!/usr/bin/env bash
# Builds the test guest for virtio-fs: a Debian bookworm cloud kernel and a
# busybox initramfs that mounts a virtio-fs share and runs a command on it
# (see guest/init). Run as root on Debian 12.
#
#   vm-images/build.sh [--with-fio] [--refresh] [--suite SUITE] [OUTDIR]
#
# OUTDIR (default $EVFS_OUT, else vm-images/out, or vm-images/out-SUITE with
# --suite; git-ignored) receives everything:
#   vmlinuz          the kernel (from linux-image-*-cloud-amd64, apt-get download)
#   initrd.img       busybox-static, virtio-fs modules, /init, evfs-walk,
#                    evfs-bench, getfattr
#   initrd-fio.img   the same plus Debian's fio and its shared libraries
#                    (--with-fio or EVFS_WITH_FIO=1; about 80 MiB of libraries)
#   kernel-version   the kernel release (e.g. 6.1.0-56-cloud-amd64)
#   debs/, kernel/   the downloaded package and its extracted tree (cache)
#
# Idempotent and cached: a rerun with everything in place only checks stamps.
# --refresh re-resolves the kernel package (to pick up a newer Debian kernel).
# --suite SUITE (or $EVFS_KERNEL_SUITE) takes the cloud kernel of another
# Debian suite (trixie, sid, ...) through a private apt state in
# OUTDIR/apt (nothing is installed): a newer guest kernel speaks newer FUSE.
# Give each suite its own OUTDIR.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
with_fio=${EVFS_WITH_FIO:-0}
refresh=0
suite=${EVFS_KERNEL_SUITE:-}
out=""
while [ $# -gt 0 ]; do
  case $1 in
    --with-fio) with_fio=1 ;;
    --refresh) refresh=1 ;;
    --suite)
      [ $# -ge 2 ] || { echo "build.sh: --suite needs a suite name" >&2; exit 2; }
      suite=$2
      shift
      ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build.sh: unknown option $1" >&2; exit 2 ;;
    *) out=$1 ;;
  esac
  shift
done
out=${out:-${EVFS_OUT:-$here/out${suite:+-$suite}}}
mkdir -p "$out"
out=$(cd "$out" && pwd)

log() { echo "build.sh: $*" >&2; }

# --- host packages -----------------------------------------------------------
apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
}
is_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}
ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    is_installed "$pkg" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt_update_once
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# qemu-system-x86: the VM (run.sh); busybox-static: the guest userland;
# cpio, lz4: the initramfs; kmod: depmod for modules.dep; attr: getfattr for
# the guest; fio (optional): the guest benchmark tool.
pkgs=(qemu-system-x86 busybox-static cpio lz4 kmod attr)
[ "$with_fio" = 1 ] && pkgs+=(fio)
ensure_packages "${pkgs[@]}"

# --- kernel ------------------------------------------------------------------
# The versioned package (e.g. linux-image-6.1.0-56-cloud-amd64) is what the
# metapackage linux-image-cloud-amd64 depends on; from the host's apt
# sources, or with --suite from that suite's (a private apt state).
kapt=()
kapt_update() { apt_update_once; }
if [ -n "$suite" ]; then
  case $suite in
    *[!a-z0-9-]*) echo "build.sh: bad suite name $suite" >&2; exit 2 ;;
  esac
  st=$out/apt
  # shellcheck source=scripts/private-apt.sh
  . "$here/../scripts/private-apt.sh"
  private_apt_opts "$st"
  kapt=("${PRIVATE_APT[@]}")
  kapt_update() {
    [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || ensure_packages debian-archive-keyring
    log "apt-get update ($suite, private state in $st)"
    private_apt_update "$st" "$suite" "${EVFS_DEBIAN_MIRROR:-}"
  }
fi
kdir=$out/kernel
if [ "$refresh" = 1 ] || [ ! -f "$kdir/.done" ] || [ "$(cat "$out/kernel-suite" 2>/dev/null)" != "${suite:-host}" ]; then
  kapt_update
  kpkg=$(apt-cache "${kapt[@]}" depends linux-image-cloud-amd64 |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
  if [ -z "$kpkg" ]; then
    echo "build.sh: cannot resolve linux-image-cloud-amd64's kernel package${suite:+ in $suite}" >&2
    exit 1
  fi
  kver=${kpkg#linux-image-}
  if [ -f "$kdir/.done" ] && [ "$(cat "$out/kernel-version")" = "$kver" ]; then
    log "kernel $kver already extracted"
  else
    log "downloading $kpkg"
    rm -rf "$out/debs" "$kdir"
    mkdir -p "$out/debs" "$kdir/root"
    # As root apt warns that its _apt user cannot write here; download as root.
    # Newer Debian kernels split the image package: the kernel in
    # linux-binary-VERSION, its modules in linux-modules-VERSION, its config
    # and modules.builtin in linux-base-VERSION, all in /usr/lib/modules.
    kparts=$(apt-cache "${kapt[@]}" depends "$kpkg" |
      awk -v v="$kver" '$1 == "Depends:" && ($2 == "linux-binary-" v || $2 == "linux-modules-" v || $2 == "linux-base-" v) { print $2 }' | sort -u)
    # shellcheck disable=SC2086 # kparts: package names, one per word
    (cd "$out/debs" && apt-get download -q -o APT::Sandbox::User=root "${kapt[@]}" "$kpkg" $kparts >/dev/null)
    for deb in "$out"/debs/*.deb; do
      dpkg-deb -x "$deb" "$kdir/root"
    done
    # Newer packages keep their modules in /usr/lib/modules (merged /usr).
    if [ ! -d "$kdir/root/lib/modules" ] && [ -d "$kdir/root/usr/lib/modules" ]; then
      mkdir -p "$kdir/root/lib"
      ln -s ../usr/lib/modules "$kdir/root/lib/modules"
    fi
    # The package ships no modules.dep (its postinst runs depmod): make one.
    depmod -b "$kdir/root" "$kver"
    if [ -f "$kdir/root/boot/vmlinuz-$kver" ]; then
      cp "$kdir/root/boot/vmlinuz-$kver" "$out/vmlinuz"
    else
      cp "$kdir/root/lib/modules/$kver/vmlinuz" "$out/vmlinuz"
    fi
    echo "$kver" >"$out/kernel-version"
    touch "$kdir/.done"
  fi
  echo "${suite:-host}" >"$out/kernel-suite"
fi
kver=$(cat "$out/kernel-version")
kroot=$kdir/root
moddir=$kroot/lib/modules/$kver
kconfig=$kroot/boot/config-$kver
[ -f "$kconfig" ] || kconfig=$moddir/config

# --- stamp: rebuild the initramfs only when an input changed ------------------
# Inputs: this script, the guest files, the kernel, the host packages copied in.
stamp_of() {
  {
    echo "kernel $kver fio $1"
    dpkg-query -W busybox-static attr
    [ "$1" = 1 ] && dpkg-query -W fio
    sha256sum "$0" "$here"/guest/*
  } | sha256sum | cut -d' ' -f1
}

# --- modules -----------------------------------------------------------------
# What virtio-fs needs, and overlayfs (the Kata-style test stacks layers
# with it); anything built into the kernel (modules.builtin) is skipped.
# The serial console driver (8250) is built in on the cloud kernel.
wanted_modules=(8250 virtio virtio_ring virtio_pci virtiofs overlay)

# Prints the module files (relative to $moddir) to load, dependencies first,
# from modules.dep (a module's line lists its full dependency closure in an
# order that modprobe loads from right to left).
module_load_order() {
  awk -v wanted="${wanted_modules[*]}" '
    function base(p,   b) { b = p; sub(/.*\//, "", b); sub(/\.ko(\.[a-z]+)?$/, "", b); gsub(/-/, "_", b); return b }
    BEGIN { n = split(wanted, w, " "); for (i = 1; i <= n; i++) want[w[i]] = i }
    FILENAME ~ /modules\.builtin$/ { builtin[base($1)] = 1; next }
    {
      mod = $1; sub(/:$/, "", mod)
      path[base(mod)] = mod
      line[base(mod)] = $0
    }
    END {
      for (i = 1; i <= n; i++) {
        m = w[i]
        if (m in builtin) continue
        if (!(m in line)) { print "missing module " m > "/dev/stderr"; exit 1 }
        k = split(line[m], deps, " ")
        for (j = k; j >= 2; j--) if (!(deps[j] in done)) { print deps[j]; done[deps[j]] = 1 }
        if (!(path[m] in done)) { print path[m]; done[path[m]] = 1 }
      }
    }' "$moddir/modules.builtin" "$moddir/modules.dep"
}

# Copies a dynamically linked host binary and the shared libraries it loads
# (as ldd resolves them, same paths) into the staging tree $1.
copy_with_libs() {
  local stage=$1 bin=$2 lib
  install -D -m 0755 "$bin" "$stage$bin"
  for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    # Same path as on the host, with symlinks resolved (merged /usr is not
    # reproduced: /lib and /usr/lib are plain directories in the guest).
    [ -e "$stage$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$stage$lib"
  done
}

build_initramfs() {
  local variant=$1 fio=$2 img stamp stage
  img=$out/$variant.img
  stamp=$(stamp_of "$fio")
  if [ -f "$img" ] && [ "$(cat "$img.stamp" 2>/dev/null)" = "$stamp" ]; then
    log "$variant.img is up to date"
    return 0
  fi
  log "building $variant.img"
  stage=$out/stage-$variant
  rm -rf "$stage"
  mkdir -p "$stage"/{bin,dev,proc,sys,tmp,run,mnt,root,etc,lib/modules/evfs}
  ln -s bin "$stage/sbin"
  mkdir -p "$stage/usr"
  ln -s ../bin "$stage/usr/bin"
  ln -s ../bin "$stage/usr/sbin"

  # busybox-static and a symlink per applet.
  if ldd /bin/busybox >/dev/null 2>&1; then
    echo "build.sh: /bin/busybox is not the static one (install busybox-static)" >&2
    exit 1
  fi
  install -m 0755 /bin/busybox "$stage/bin/busybox"
  local applet
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$stage/bin/$applet"
  done

  # Modules, in load order, as NN-name.ko plus a list for /init.
  local n=0 m f
  : >"$stage/lib/modules/evfs/load.list"
  for m in $(module_load_order); do
    n=$((n + 1))
    f=$(printf '%02d-%s' "$n" "$(basename "${m%%.ko*}").ko")
    case $m in
      *.ko) cp "$moddir/$m" "$stage/lib/modules/evfs/$f" ;;
      *.ko.xz) xz -dc "$moddir/$m" >"$stage/lib/modules/evfs/$f" ;;
      *.ko.zst) zstd -qdc "$moddir/$m" >"$stage/lib/modules/evfs/$f" ;;
      *) echo "build.sh: unsupported module file $m" >&2; exit 1 ;;
    esac
    echo "$f" >>"$stage/lib/modules/evfs/load.list"
  done

  # The guest scripts and tools.
  install -m 0755 "$here/guest/init" "$stage/init"
  install -m 0755 "$here/guest/evfs-walk" "$stage/bin/evfs-walk"
  install -m 0755 "$here/guest/evfs-bench" "$stage/bin/evfs-bench"
  copy_with_libs "$stage" /usr/bin/getfattr
  [ "$fio" = 1 ] && copy_with_libs "$stage" /usr/bin/fio
  echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
  echo "root:x:0:" >"$stage/etc/group"
  [ -e "$stage/dev/console" ] || mknod -m 600 "$stage/dev/console" c 5 1

  # newc cpio, sorted and with fixed mtimes for reproducibility, compressed with what the kernel
  # can unpack: lz4 legacy format (fastest to boot) else gzip.
  local compress
  if grep -q '^CONFIG_RD_LZ4=y' "$kconfig"; then compress=(lz4 -l -9 -q -c); else compress=(gzip -9 -n -c); fi
  find "$stage" -exec touch -h -d @0 {} +
  (cd "$stage" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc -R 0:0 --reproducible --quiet) | "${compress[@]}" >"$img.tmp"
  mv "$img.tmp" "$img"
  echo "$stamp" >"$img.stamp"
  rm -rf "$stage"
  log "$variant.img: $(du -h "$img" | cut -f1) (${compress[0]})"
}

build_initramfs initrd 0
[ "$with_fio" = 1 ] && build_initramfs initrd-fio 1
log "ready: $out/vmlinuz $out/initrd.img$([ "$with_fio" = 1 ] && echo " $out/initrd-fio.img")"
