#!/usr/bin/env bash
# Builds the headcount runtime image on this machine without pulling anything.
#
# deploy/Dockerfile is the usual multi-stage build (official Rust image, then a
# distroless runtime); it needs a registry. This script makes the same kind of
# runtime image FROM scratch instead: it builds (or takes) the binary here and
# puts in the image exactly what the binary needs at run time:
#
#   /usr/local/bin/headcount        the node (ENTRYPOINT)
#   /usr/local/bin/headcount-probe  a tiny std-only HTTP probe for HEALTHCHECK
#                                   (deploy/probe/probe.rs; no shell/curl here)
#   the glibc dynamic loader and the shared libraries `ldd` lists for both
#   /etc/passwd, /etc/group         a non-root user `headcount` (10001:10001)
#   /etc/nsswitch.conf              `hosts: files dns`: glibc >= 2.34 has the
#                                   files and dns NSS modules built into libc,
#                                   so other containers' names resolve with no
#                                   libnss_*.so in the image (checked below)
#   /tmp                            (1777)
#
# Environment:
#   HEADCOUNT_BINARY  a headcount binary to use, e.g. target/debug/headcount
#                     from `cargo test`; default: `cargo build --release -p
#                     headcount` and target/release/headcount
#   HEADCOUNT_IMAGE   the tag to build (default headcount:local)
#   HEADCOUNT_STRIP   1 (default): strip debug info from the copy in the image
#                     (a debug build shrinks from ~100 MB to ~20 MB); 0: keep it
#   RUSTC             the compiler for the probe (default rustc)
#
# Usage: deploy/build-image.sh            # release build, tag headcount:local
#        HEADCOUNT_BINARY=target/debug/headcount deploy/build-image.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
image="${HEADCOUNT_IMAGE:-headcount:local}"
strip_debug="${HEADCOUNT_STRIP:-1}"
rustc_bin="${RUSTC:-rustc}"

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { printf 'build-image: error: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || die "docker not found"
command -v ldd >/dev/null || die "ldd not found (glibc host needed)"

binary="${HEADCOUNT_BINARY:-}"
if [[ -z "$binary" ]]; then
    log "cargo build --release -p headcount"
    (cd "$root" && cargo build --release --locked -p headcount)
    binary="${CARGO_TARGET_DIR:-$root/target}/release/headcount"
fi
[[ -x "$binary" ]] || die "not an executable: $binary (set HEADCOUNT_BINARY)"
"$here/cluster-secret.sh"
binary="$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")"

stage="$(mktemp -d "${TMPDIR:-/tmp}/headcount-image.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
rootfs="$stage/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp" "$stage/data"
chmod 1777 "$rootfs/tmp"

log "binary: $binary"
cp "$binary" "$rootfs/usr/local/bin/headcount"
if [[ "$strip_debug" == 1 ]] && command -v objcopy >/dev/null; then
    objcopy --strip-debug "$rootfs/usr/local/bin/headcount"
fi

log "compiling the health probe (deploy/probe/probe.rs)"
"$rustc_bin" --edition 2021 -C opt-level=s -C strip=symbols \
    -o "$rootfs/usr/local/bin/headcount-probe" "$here/probe/probe.rs"

# Every shared object either program loads, plus the loader, at the paths the
# loader looks for them (copied as real files, symlinks followed).
libs="$(for exe in "$rootfs/usr/local/bin/headcount" "$rootfs/usr/local/bin/headcount-probe"; do
    ldd "$exe" | awk '/=> \// { print $3 } /^[[:space:]]*\/[^ ]+ \(/ { print $1 }'
done | sort -u)"
[[ -n "$libs" ]] || die "ldd listed no libraries (a static binary needs none: remove this check)"
for lib in $libs; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
    log "lib: $lib"
done

# Resolution of other containers' names must not need an NSS plugin.
libc="$(grep -m1 '/libc\.so\.6$' <<<"$libs" || true)"
[[ -n "$libc" ]] || die "libc.so.6 not among the libraries"
if ! grep -qa '_nss_dns_gethostbyname4_r' "$libc" || ! grep -qa '_nss_files_gethostbyname4_r' "$libc"; then
    die "$libc has no built-in files/dns NSS modules (glibc < 2.34): copy libnss_files/libnss_dns too"
fi

cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
headcount:x:10001:10001:headcount:/nonexistent:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
headcount:x:10001:
EOF
cat >"$rootfs/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF

version="$("$binary" --version 2>/dev/null | awk '{ print $2 }' || true)"
cat >"$stage/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /data/
USER 10001:10001
ENV HEADCOUNT_HTTP=0.0.0.0:8080 \\
    HEADCOUNT_GRPC=0.0.0.0:9090 \\
    HEADCOUNT_GOSSIP=0.0.0.0:7946 \\
    HEADCOUNT_DATA_DIR=/data
VOLUME /data
EXPOSE 8080/tcp 9090/tcp 7946/udp
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 CMD ["/usr/local/bin/headcount-probe", "/readyz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/headcount"]
LABEL org.opencontainers.image.title="headcount" \\
      org.opencontainers.image.description="headcount node, FROM scratch (deploy/build-image.sh)" \\
      org.opencontainers.image.version="${version:-unknown}"
EOF

log "docker build -t $image"
previous="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
# The legacy builder and BuildKit both take this; nothing is pulled (FROM scratch).
docker build --quiet -t "$image" "$stage" >/dev/null
# Don't pile up untagged images build after build: drop the one the tag named
# before, unless something still uses it (then docker refuses, and that's fine).
if [[ -n "$previous" && "$previous" != "$(docker image inspect -f '{{.Id}}' "$image")" ]]; then
    docker rmi "$previous" >/dev/null 2>&1 || true
fi
size="$(docker image inspect -f '{{.Size}}' "$image")"
log "built $image ($((size / 1024 / 1024)) MiB)"
