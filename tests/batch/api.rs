//! The API over TCP (`berth up --listen`), where callers are who their token says.

use crate::cluster::{free_port, promtool, Cluster};
use crate::support::*;
use std::io::{Read, Write};
use std::process::Stdio;

/// `request` to the API at `port` over TLS, trusting the certificate that `token` names (as
/// the CLI does); the answer as it came.
fn raw_tls(port: u16, token: &str, request: &str) -> String {
    let fingerprint = berth_agent::auth::Claims::unverified(token)
        .and_then(|c| c.tls)
        .expect("a token from `berth token` names the certificate");
    let config = berth_agent::tls::client_config(&fingerprint).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut s = berth_agent::tls::connect(tcp, &config).unwrap();
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
    let api = format!("https://{listen}");
    // A token for oneself, made on the Unix socket.
    let token = c.token(Mode::Rootless);
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
    // One controller, which leads, where the API is.
    let controllers: serde_json::Value =
        serde_json::from_str(over_tcp(Mode::Rootless, &token, &["controllers", "--json"]).ok())
            .unwrap();
    assert_eq!(controllers.as_array().unwrap().len(), 1, "{controllers}");
    assert_eq!(controllers[0]["role"], "leader");
    assert_eq!(controllers[0]["state"], "up");
    assert_eq!(controllers[0]["url"], api.as_str());
    assert!(
        controllers[0]["images"].as_u64() >= Some(1),
        "{controllers}"
    );
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
    let none = raw_tls(
        port,
        &token,
        "GET /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(none.starts_with("HTTP/1.1 401"), "{none}");
    assert!(none.contains("needs a token"), "{none}");
    // Other TLS clients check the controller against its STATE/cluster.crt (as Prometheus
    // does), for the name it gives, `berth`.
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(c.state.join("cluster.crt"))
        .args(["--resolve", &format!("berth:{port}:127.0.0.1"), "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("https://berth:{port}/v1/jobs/{id}"))
        .output()
        .unwrap();
    let shown: serde_json::Value =
        serde_json::from_slice(&curl.stdout).unwrap_or_else(|e| panic!("{e}: {curl:?}"));
    assert_eq!(shown["user"], TEST_USER, "{shown}");
    // And Go's, as Prometheus's scrapes: promtool's query, trusting the certificate alone
    // (SSL_CERT_FILE) and asking for `berth` (an /etc/hosts of its own), is answered by the
    // API (401: it sends no token), so the handshake took.
    let hosts = c.f.path("hosts");
    std::fs::write(&hosts, "127.0.0.1 berth\n").unwrap();
    let go = std::process::Command::new("unshare")
        .args(["--mount", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/hosts && exec "$2" query instant "https://berth:$3" up"#)
        .arg("sh")
        .arg(&hosts)
        .arg(crate::cluster::PROMTOOL)
        .arg(port.to_string())
        .env("SSL_CERT_FILE", c.state.join("cluster.crt"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&go.stderr);
    assert!(
        said.contains("401") && !said.contains("x509") && !said.contains("tls:"),
        "{go:?}"
    );
    // TLS only: plain HTTP gets no answer, and the CLI says what to write.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .write_all(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP"), "{answer:?}");
    let mut cmd = c.f.cmd(Mode::Rootless, &["queue"]);
    cmd.env("BERTH_API", format!("http://{listen}"))
        .env("BERTH_TOKEN", &token);
    let http = Out::from_output(cmd.output().unwrap());
    assert!(http.stderr.contains(&api), "{}", http.stderr);
    // A token naming another cluster's certificate: the controller is not trusted with it.
    let other = berth_agent::auth::Key::from_bytes(&[9; 32]);
    let mut claims = berth_agent::auth::Claims::unverified(&token).unwrap();
    claims.tls = Some(other.tls().fingerprint.clone());
    let foreign = over_tcp(Mode::Rootless, &other.mint(&claims), &["queue"]);
    assert!(
        foreign.stderr.contains("not this berth cluster's"),
        "{}",
        foreign.stderr
    );
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

/// Checks `value` against `schema`, in the subset of JSON Schema that utoipa writes: `$ref`,
/// `type` (one or a list), `properties` with `required` (and nothing the schema does not
/// name), `items`, `oneOf`.
fn conforms(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    at: &str,
) -> Result<(), String> {
    use serde_json::Value;
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        return conforms(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(options) = schema["oneOf"].as_array() {
        return options
            .iter()
            .find(|o| conforms(doc, o, value, at).is_ok())
            .map(|_| ())
            .ok_or_else(|| format!("{at}: {value} matches none of {schema}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let fits = types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
    if !fits {
        return Err(format!(
            "{at}: {value} is {kind}, the schema says {types:?}"
        ));
    }
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                conforms(doc, &schema["items"], item, &format!("{at}[{i}]"))?;
            }
        }
        Value::Object(fields) => {
            let properties = schema["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap();
                if !fields.contains_key(name) {
                    return Err(format!("{at}: the required {name} is missing"));
                }
            }
            for (name, v) in fields {
                let property = properties
                    .get(name)
                    .ok_or_else(|| format!("{at}: {name} is not in the document"))?;
                conforms(doc, property, v, &format!("{at}.{name}"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[test]
fn the_api_answers_as_its_openapi_document_says() {
    let Some(c) = Cluster::start() else { return };
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    let get = |path: &str| -> (u16, String) {
        let answer = c
            .raw(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        (
            head.split_whitespace().nth(1).unwrap().parse().unwrap(),
            body.to_string(),
        )
    };
    // The document served is the one committed.
    let (status, served) = get("/openapi.json");
    assert_eq!(status, 200);
    assert_eq!(served, committed);
    let doc: serde_json::Value = serde_json::from_str(&committed).unwrap();
    // The check itself tells a wrong answer from a right one.
    let job = serde_json::json!({"$ref": "#/components/schemas/JobInfo"});
    assert!(conforms(&doc, &job, &serde_json::json!({"id": 1}), "x").is_err());
    assert!(conforms(&doc, &job, &serde_json::json!([]), "x").is_err());

    let script = "#!/bin/sh\n#SBATCH -n 1\n#BERTH --image busybox\nberth step true\n";
    let id = c.submit(Mode::Rootless, "doc.sh", script, &[]);
    c.wait_for(id, &["COMPLETED"]);
    let held = c.submit(Mode::Rootless, "held.sh", script, &["--hold"]);
    for (route, path) in [
        ("/v1/jobs", "/v1/jobs".to_string()),
        ("/v1/jobs/{id}", format!("/v1/jobs/{id}")),
        ("/v1/jobs/{id}", format!("/v1/jobs/{held}")),
        ("/v1/jobs/{id}", "/v1/jobs/424242".to_string()),
        ("/v1/jobs/{id}/wait", format!("/v1/jobs/{id}/wait")),
        (
            "/v1/jobs/{id}/wait",
            format!("/v1/jobs/{held}/wait?timeout=1"),
        ),
        ("/v1/jobs/{id}/wait", format!("/v1/jobs/{id}/wait?count=0")),
        (
            "/v1/jobs/{id}/wait",
            format!("/v1/jobs/{id}/wait?count=424242"),
        ),
        ("/v1/history", "/v1/history".to_string()),
        ("/v1/history", "/v1/history?bogus=1".to_string()),
        ("/v1/nodes", "/v1/nodes".to_string()),
        ("/v1/partitions", "/v1/partitions".to_string()),
    ] {
        let (status, body) = get(&path);
        let response = &doc["paths"][route]["get"]["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "GET {path}: status {status} is not in the document"
        );
        let schema = &response["content"]["application/json"]["schema"];
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        conforms(&doc, schema, &value, &path).unwrap();
    }
    // A wait for an ended job answers at once, one for a held one when its time runs out.
    let ended: serde_json::Value =
        serde_json::from_str(&get(&format!("/v1/jobs/{id}/wait")).1).unwrap();
    assert_eq!(ended["reached"], true, "{ended}");
    assert_eq!(ended["jobs"][0]["state"], "COMPLETED", "{ended}");
    assert_eq!(ended["jobs"][0]["exit_code"], 0, "{ended}");
    let (status, waiting) = get(&format!("/v1/jobs/{held}/wait?timeout=1"));
    assert_eq!(
        (status, waiting.as_str()),
        (200, r#"{"reached":false,"jobs":[]}"#)
    );
    // Jobs that do not all exist are refused, not waited for.
    let (status, missing) = get(&format!("/v1/jobs/{id}/wait?count=424242"));
    assert_eq!(status, 404, "{missing}");
}

#[test]
fn metrics_count_the_jobs_and_show_each_nodes_health_for_prometheus() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let Some(c) = Cluster::start_with(None, &["--listen", &listen]) else {
        return;
    };
    let script = "#!/bin/sh\n#BERTH --image busybox\ntrue\n";
    let done = c.submit(Mode::Rootless, "done.sh", script, &[]);
    c.wait_for(done, &["COMPLETED"]);
    let held = c.submit(Mode::Rootless, "held.sh", script, &["--hold"]);
    let partition = c.show(held)["partition"].as_str().unwrap().to_string();
    let nodes: serde_json::Value =
        serde_json::from_str(c.berth(Mode::Rootless, &["nodes", "--json"]).ok()).unwrap();
    let node = &nodes[0];
    let name = node["name"].as_str().unwrap();
    // The controller's own node: its machine's load and memory, seen now.
    let load = node["load"].as_array().unwrap();
    assert_eq!(load.len(), 3, "{node}");
    assert!(load.iter().all(|l| l.as_f64().unwrap() >= 0.0), "{node}");
    let available = node["memory_available"].as_u64().unwrap();
    assert!(
        available > 0 && available <= node["memory"].as_u64().unwrap(),
        "{node}"
    );
    assert!(node["heard"].is_null(), "{node}");

    let m = c.metrics();
    let at = |key: &str| m.get(key).copied();
    assert_eq!(at("berth_jobs_submitted_total"), Some(2.0), "{m:?}");
    assert_eq!(
        at(r#"berth_jobs_ended_total{state="COMPLETED"}"#),
        Some(1.0),
        "{m:?}"
    );
    let pending = format!(r#"berth_jobs{{partition="{partition}",state="PENDING"}}"#);
    assert_eq!(at(&pending), Some(1.0), "{m:?}");
    let waiting = format!(r#"berth_jobs_pending{{partition="{partition}",reason="JobHeldUser"}}"#);
    assert_eq!(at(&waiting), Some(1.0), "{m:?}");
    let users = format!(r#"berth_user_jobs{{user="{TEST_USER}",state="PENDING"}}"#);
    assert_eq!(at(&users), Some(1.0), "{m:?}");
    assert!(at("berth_scheduler_passes_total").unwrap() >= 1.0, "{m:?}");
    let on = |metric: &str| at(&format!(r#"{metric}{{node="{name}"}}"#));
    assert_eq!(on("berth_node_cpus"), node["cpus"].as_f64(), "{m:?}");
    assert_eq!(on("berth_node_cpus_allocated"), Some(0.0), "{m:?}");
    assert_eq!(
        on("berth_node_memory_bytes"),
        node["memory"].as_f64(),
        "{m:?}"
    );
    assert_eq!(
        at(&format!(
            r#"berth_node_state{{node="{name}",state="idle"}}"#
        )),
        Some(1.0)
    );
    assert!(on("berth_node_load1").unwrap() >= 0.0, "{m:?}");
    assert!(
        on("berth_node_memory_available_bytes").unwrap() > 0.0,
        "{m:?}"
    );
    // Its own node is no remote agent's: no heartbeat to age.
    assert_eq!(on("berth_node_heartbeat_age_seconds"), None, "{m:?}");

    // A cancelled pending job ends: counted, and no longer waiting.
    c.berth(Mode::Rootless, &["cancel", &held.to_string()]).ok();
    let m = c.metrics();
    assert_eq!(
        m.get(r#"berth_jobs_ended_total{state="CANCELLED"}"#),
        Some(&1.0),
        "{m:?}"
    );
    assert_eq!(m.get(&waiting), None, "{m:?}");

    // sinfo, scontrol and pbsnodes show the same, as their users read it.
    let sinfo = c.berth(
        Mode::Rootless,
        &["as", "sinfo", "-h", "-N", "-o", "%N %O %e"],
    );
    let words: Vec<&str> = sinfo.ok().split_whitespace().collect();
    assert_eq!(words[0], name, "{words:?}");
    assert!(
        words[1].parse::<f64>().is_ok() && words[2].parse::<u64>().is_ok(),
        "{words:?}"
    );
    let shown = c.berth(Mode::Rootless, &["as", "scontrol", "show", "node", name]);
    assert!(!shown.ok().contains("N/A"), "{}", shown.stdout);
    assert!(shown.stdout.contains(" CPULoad="), "{}", shown.stdout);
    let pbs = c.berth(Mode::Rootless, &["as", "pbsnodes", name]);
    assert!(pbs.ok().contains(",loadave="), "{}", pbs.stdout);

    // Over TCP, as the rest of the API: with a token only.
    let token = c.token(Mode::Rootless);
    let answer = raw_tls(
        port,
        &token,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let answer = raw_tls(
        port,
        &token,
        &format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    );
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        crate::cluster::samples(body).get("berth_jobs_submitted_total"),
        Some(&2.0),
        "{body}"
    );
}

#[test]
fn the_example_prometheus_set_up_and_its_alerts_pass_promtool() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring");
    let path = |name: &str| docs.join(name).to_str().unwrap().to_string();
    let ok = |args: &[&str]| {
        let out = promtool(args, None);
        assert!(out.status.success(), "promtool {args:?}: {out:?}");
    };
    ok(&["check", "rules", &path("berth-alerts.yml")]);
    // The alerts' thresholds and texts (WARNING after 120 s without a heartbeat, CRITICAL
    // after 180, a node down, jobs lost with their node, no controller answering).
    ok(&["test", "rules", &path("berth-alerts.test.yml")]);
    // The example configuration, its token and certificate files where it says.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("berth.token");
    std::fs::write(&token, "t").unwrap();
    let certificate = dir.path().join("berth.crt");
    std::fs::write(
        &certificate,
        berth_agent::auth::Key::from_bytes(&[1; 32]).tls().pem(),
    )
    .unwrap();
    let config = std::fs::read_to_string(docs.join("example.prometheus.yml"))
        .unwrap()
        .replace("/etc/prometheus/berth.token", token.to_str().unwrap())
        .replace("/etc/prometheus/berth.crt", certificate.to_str().unwrap());
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    std::fs::copy(
        docs.join("berth-alerts.yml"),
        dir.path().join("berth-alerts.yml"),
    )
    .unwrap();
    ok(&[
        "check",
        "config",
        dir.path().join("prometheus.yml").to_str().unwrap(),
    ]);
}
