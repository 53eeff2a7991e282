//! The API over TCP (`berth up --listen`), where callers are who their token says.

use crate::cluster::Cluster;
use crate::support::*;
use std::io::{Read, Write};
use std::process::Stdio;

/// A free TCP port on loopback (the kernel's pick, released for the controller to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn raw_tcp(port: u16, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_api_over_tcp_takes_the_caller_from_a_signed_token() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let Some(c) = Cluster::start_with(None, &["--listen", &listen]) else {
        return;
    };
    let api = format!("http://{listen}");
    // A token for oneself, made on the Unix socket.
    let made = c.berth(Mode::Rootless, &["token", "--lifetime", "0:10"]);
    let token = made
        .ok()
        .trim()
        .strip_prefix("BERTH_TOKEN=")
        .unwrap()
        .to_string();
    let over_tcp = |mode: Mode, token: &str, args: &[&str]| {
        let mut cmd = c.f.cmd(mode, args);
        cmd.env("BERTH_API", &api).env("BERTH_TOKEN", token);
        Out::from_output(cmd.stdin(Stdio::null()).output().unwrap())
    };
    // Submitted over TCP, the job is the token's user's.
    let script = c.f.cwd(Mode::Rootless).join("tcp.sh");
    std::fs::write(&script, "#!/bin/sh\n#BERTH --image busybox\nid -un\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let id: u64 = over_tcp(
        Mode::Rootless,
        &token,
        &["submit", "--parsable", script.to_str().unwrap()],
    )
    .ok()
    .trim()
    .parse()
    .unwrap();
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    assert_eq!(job["user"], TEST_USER, "{job}");
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert!(over_tcp(Mode::Rootless, &token, &["history"])
        .ok()
        .contains(&id.to_string()));
    // The token's user may not act on root's jobs, whoever runs the client.
    let sleeper = c.submit(
        Mode::Root,
        "root.sh",
        "#!/bin/sh\n#BERTH --image busybox\nexec sleep 300\n",
        &[],
    );
    let denied = over_tcp(Mode::Root, &token, &["cancel", &sleeper.to_string()]);
    assert!(
        denied.stderr.contains("only its owner or root"),
        "{}",
        denied.stderr
    );
    // Tokens are made on the Unix socket only.
    let minted = over_tcp(Mode::Rootless, &token, &["token"]);
    assert!(
        minted.stderr.contains("on the controller's machine"),
        "{}",
        minted.stderr
    );
    // Only root makes tokens for others.
    let other = c.berth(Mode::Rootless, &["token", "--user", "root"]);
    assert!(
        other.stderr.contains("only root may make a token"),
        "{}",
        other.stderr
    );
    let for_user = c.berth(Mode::Root, &["token", "--user", TEST_USER]);
    assert!(for_user.ok().starts_with("BERTH_TOKEN=berth1."));
    // No token, a forged one, a missing one on the client side.
    let none = raw_tcp(
        port,
        "GET /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(none.starts_with("HTTP/1.1 401"), "{none}");
    assert!(none.contains("needs a token"), "{none}");
    let (signed, _) = token.rsplit_once('.').unwrap();
    let forged = over_tcp(Mode::Rootless, &format!("{signed}.AAAA"), &["queue"]);
    assert!(
        forged.stderr.contains("signature does not match"),
        "{}",
        forged.stderr
    );
    let mut cmd = c.f.cmd(Mode::Rootless, &["queue"]);
    cmd.env("BERTH_API", &api).env_remove("BERTH_TOKEN");
    let unset = Out::from_output(cmd.output().unwrap());
    assert!(unset.stderr.contains("set BERTH_TOKEN"), "{}", unset.stderr);
    // Expired after its lifetime (0:10, ten seconds, was asked for).
    std::thread::sleep(std::time::Duration::from_secs(11));
    let expired = over_tcp(Mode::Rootless, &token, &["queue"]);
    assert!(expired.stderr.contains("expired"), "{}", expired.stderr);
}
