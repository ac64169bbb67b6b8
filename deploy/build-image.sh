#!/usr/bin/env bash
# Build the turnd container image WITHOUT a registry (CI, air-gapped hosts, Debian's Docker with
# no access to Docker Hub): nothing is pulled.
#
#   deploy/build-image.sh            # tags turnd:latest (or $TURND_IMAGE), what
#                                    # deploy/docker-compose.yml runs
#   TURND_FEATURES=xdp deploy/build-image.sh   # with the XDP fast path built in
#
# 1. cargo builds the release binary on this host (CARGO_TARGET_DIR and the rest of cargo's
#    configuration are honoured: the binary is found through `cargo metadata`).
# 2. A runtime base image is made from this host's own C library: exactly the shared libraries
#    the binary links (ldd), a passwd/group with the nonroot user 65532, an empty /tmp. It
#    stands in for the default stage's distroless base, which would have to be pulled.
# 3. deploy/Dockerfile's `runtime-prebuilt` stage is built with the repository root as the
#    context (.dockerignore lets only the binary out of target/), so the image has the same
#    user, health check, entrypoint and environment as the default, pulling path.
#
# With a registry you need none of this: `docker compose up -d --build` builds the Dockerfile's
# default stage (the official Rust image compiles turnd).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
image=${TURND_IMAGE:-turnd:latest}

# TURND_FEATURES=xdp builds the kernel fast path in (README, "Kernel fast path"); it needs
# clang and libbpf's headers on this host: apt-get install clang libbpf-dev.
cargo build --release --locked --bin turnd ${TURND_FEATURES:+--features "$TURND_FEATURES"}
# cargo's own answer, so CARGO_TARGET_DIR, .cargo/config.toml's build.target-dir etc. work.
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
binary="$target_dir/release/turnd"
[ -x "$binary" ] || { echo "build-image.sh: no binary at $binary" >&2; exit 1; }

work=$(mktemp -d)
base="turnd-base:build-$$"
staged=""
cleanup() {
  # The base tag only names layers the final image keeps; dropping it leaves no stray image.
  docker rmi "$base" >/dev/null 2>&1 || true
  [ -z "$staged" ] || rm -rf "$staged"
  rm -rf "$work"
}
trap cleanup EXIT

# 2. The runtime base. Every absolute path ldd prints (the libraries and the dynamic loader)
#    goes to the same path in the image; glibc >= 2.34 has nss files/dns built in.
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{etc,tmp,usr/local/bin}
for lib in $(ldd "$binary" | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"
tar -C "$rootfs" -c . | docker import - "$base" >/dev/null

# 3. The binary must sit inside the build context. Under the repository's target/ it is used
#    where it is; from a target directory elsewhere (CARGO_TARGET_DIR) it is staged at
#    target/image/turnd, the one other path .dockerignore lets through, and removed after.
prebuilt=target/release/turnd
if [ "$binary" != "$root/$prebuilt" ]; then
  staged="$root/target/image"
  mkdir -p "$staged"
  cp "$binary" "$staged/turnd"
  prebuilt=target/image/turnd
fi
docker build -q -f deploy/Dockerfile --target runtime-prebuilt \
  --build-arg "RUNTIME_BASE=$base" --build-arg "PREBUILT=$prebuilt" -t "$image" . >/dev/null
echo "build-image.sh: built $image from $binary${staged:+ (staged in the context as $prebuilt)}"
