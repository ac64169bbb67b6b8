//! Build script. With the `xdp` feature it compiles the XDP program (src/fast_path/relay.bpf.c)
//! with clang into OUT_DIR, where src/fast_path/xdp.rs embeds it. The default build does
//! nothing here and needs no clang.

use std::path::{Path, PathBuf};
use std::process::Command;

const BPF_SOURCE: &str = "src/fast_path/relay.bpf.c";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={BPF_SOURCE}");
    println!("cargo:rerun-if-env-changed=CLANG");
    if std::env::var_os("CARGO_FEATURE_XDP").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if let Err(e) = compile_bpf(&out.join("relay.bpf.o")) {
        // A panic prints the message in full; cargo's build-script error is one line per
        // cause, and this one says what to install.
        panic!("the `xdp` feature cannot build its XDP program: {e}");
    }
}

/// `clang -O2 -g -target bpf -c`, against Debian's libbpf headers (libbpf-dev) and the kernel's
/// uapi headers (linux-libc-dev); `-g` keeps the BTF that describes the maps to the loader.
fn compile_bpf(output: &Path) -> Result<(), String> {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let helpers = Path::new("/usr/include/bpf/bpf_helpers.h");
    if !helpers.exists() {
        return Err(format!(
            "{} is missing (apt-get install libbpf-dev)",
            helpers.display()
        ));
    }
    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"]);
    // Debian keeps <asm/types.h>, which <linux/bpf.h> includes, under the multiarch directory,
    // which clang does not search when it targets bpf.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        other => other,
    };
    let asm = PathBuf::from(format!("/usr/include/{multiarch}"));
    if asm.is_dir() {
        cmd.arg("-I").arg(asm);
    }
    cmd.arg("-c").arg(BPF_SOURCE).arg("-o").arg(output);
    let result = cmd.output().map_err(|e| {
        format!("cannot run `{clang}` ({e}); install clang (apt-get install clang libbpf-dev) or set CLANG")
    })?;
    if !result.status.success() {
        return Err(format!(
            "`{clang}` failed on {BPF_SOURCE}:\n{}",
            String::from_utf8_lossy(&result.stderr)
        ));
    }
    Ok(())
}
