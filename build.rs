//! Link options for the `berth` executable.

use std::{env, fs, path::PathBuf};

fn main() {
    // Packed relative relocations (DT_RELR): the position-independent executable's 16,000
    // relocations take 4 KB instead of 400 KB, which every start of berth (a submission, a
    // job's runner, a step) reads and applies: about 0.4 ms less per start. Needs GNU ld
    // 2.38+ and, where berth runs, glibc 2.36+ (Debian 12, Ubuntu 22.10, RHEL 10); set
    // BERTH_NO_RELR=1 to build for older systems.
    println!("cargo:rerun-if-env-changed=BERTH_NO_RELR");
    if env::var_os("BERTH_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bin=berth=-Wl,-z,pack-relative-relocs");
    }

    // The unwinder linked in (libgcc_eh.a, gcc's -static-libgcc) instead of loading
    // libgcc_s.so.1 at every start: that library is only there for panics, and its
    // constructor probes the CPU with CPUID instructions, each a trap to the hypervisor in
    // a VM: 0.1-0.18 ms of every `berth submit` and `berth exec` measured here.
    // rustc asks for -lgcc_s by name, so a linker script of that name, found first, answers
    // with the static archive.
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("libgcc_s.so"), "INPUT(-lgcc_eh)\n").expect("write the libgcc_s script");
    println!("cargo:rustc-link-search=native={}", out.display());
}
