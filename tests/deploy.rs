//! The deployment files parse and say what operators rely on. (No kubectl is available from
//! Debian's packages here, so the Kubernetes manifests are checked field by field.)

fn yaml(path: &str) -> serde_yaml::Value {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn kubernetes_manifests_have_the_fields_operators_rely_on() {
    let ds = yaml("deploy/kubernetes/daemonset.yaml");
    assert_eq!(ds["apiVersion"], "apps/v1");
    assert_eq!(ds["kind"], "DaemonSet");
    let pod = &ds["spec"]["template"];
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"],
        "the selector matches the pods"
    );
    assert_eq!(
        pod["spec"]["hostNetwork"], true,
        "relays bind the node's addresses"
    );
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9641");
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let env: Vec<&str> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for wanted in [
        "TURND_SECRET_FILE",
        "TURND_API_KEY_FILE",
        "TURND_DRAIN_TIMEOUT",
        "TURND_PUBLIC_HOST",
        "TURND_ADMIN_KEY",
    ] {
        assert!(env.contains(&wanted), "{wanted} missing");
    }
    let drain: u64 = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "TURND_DRAIN_TIMEOUT")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(drain < grace, "the drain ends inside the grace period");
    assert_eq!(pod["spec"]["volumes"][0]["secret"]["secretName"], "turnd");

    let secret = yaml("deploy/kubernetes/secret.yaml");
    assert_eq!(secret["kind"], "Secret");
    assert!(
        secret["stringData"]["secret"].is_string() && secret["stringData"]["api-key"].is_string()
    );
    let svc = yaml("deploy/kubernetes/service.yaml");
    assert_eq!(svc["kind"], "Service");
    assert_eq!(svc["spec"]["selector"], pod["metadata"]["labels"]);
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
}

#[test]
fn compose_uses_host_networking_and_the_shipped_prometheus_config() {
    let c = yaml("deploy/docker-compose.yml");
    assert_eq!(c["services"]["turnd"]["network_mode"], "host");
    assert_eq!(
        c["services"]["turnd"]["build"]["dockerfile"],
        "deploy/Dockerfile"
    );
    let volumes = c["services"]["prometheus"]["volumes"]
        .as_sequence()
        .unwrap();
    assert!(volumes.iter().any(|v| v
        .as_str()
        .unwrap()
        .starts_with("./prometheus/prometheus.yml:")));
    let env = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/.env.example"))
        .unwrap();
    for key in ["TURND_PUBLIC_HOST=", "TURND_SECRET=", "TURND_API_KEY="] {
        assert!(env.contains(key), "{key} missing from .env.example");
    }
}

#[test]
fn dockerfile_runs_unprivileged_with_a_healthcheck_through_turnd() {
    let d =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/Dockerfile")).unwrap();
    assert!(d.contains("USER 65532:65532"));
    assert!(d.contains(r#"CMD ["/usr/local/bin/turnd", "healthcheck"]"#));
    assert!(d.contains("STOPSIGNAL SIGTERM"));
    // The no-registry stage comes before any stage that would pull, so the legacy builder
    // stops before it.
    assert!(d.find("AS runtime-prebuilt").unwrap() < d.find("FROM rust:").unwrap());
}
