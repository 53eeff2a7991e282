//! Link options for the `berth` executable.

fn main() {
    // Packed relative relocations (DT_RELR): the position-independent executable's 16,000
    // relocations take 4 KB instead of 400 KB, which every start of berth (a submission, a
    // job's runner, a step) reads and applies: about 0.4 ms less per start. Needs GNU ld
    // 2.38+ and, where berth runs, glibc 2.36+ (Debian 12, Ubuntu 22.10, RHEL 10); set
    // BERTH_NO_RELR=1 to build for older systems.
    println!("cargo:rerun-if-env-changed=BERTH_NO_RELR");
    if std::env::var_os("BERTH_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bin=berth=-Wl,-z,pack-relative-relocs");
    }
}
