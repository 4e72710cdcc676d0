//! The docker-compose stack's files, checked without Docker: every service
//! can start (an image or a build, a health check, its bind-mounted files
//! present) and publishes ports on the host's loopback only, and the ports
//! and paths each file names agree with the others.

use std::path::Path;

use serde_norway::Value;

use crate::helpers::{read_yaml, repo_path};

fn compose() -> Value {
    read_yaml(&repo_path("docker-compose.yml"))
}

fn services(compose: &Value) -> Vec<(&str, &Value)> {
    compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(name, service)| (name.as_str().expect("service name"), service))
        .collect()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_sequence()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The value following `flag` in a command list.
fn flag<'a>(command: &[&'a str], flag: &str) -> Option<&'a str> {
    command
        .iter()
        .position(|argument| *argument == flag)
        .and_then(|index| command.get(index + 1).copied())
}

/// The port of `host:port` or `scheme://host:port[/path]`.
fn port(address: &str) -> u16 {
    let authority = address.split("://").last().unwrap();
    let authority = authority.split('/').next().unwrap();
    let (_, port) = authority.rsplit_once(':').expect("host:port");
    port.parse()
        .unwrap_or_else(|_| panic!("no port in {address:?}"))
}

/// Container ports a service publishes (`[ip:]host:container[/proto]`).
fn container_ports(service: &Value) -> Vec<u16> {
    strings(&service["ports"])
        .into_iter()
        .map(|mapping| {
            let mapping = mapping.split('/').next().unwrap();
            mapping.rsplit(':').next().unwrap().parse().unwrap()
        })
        .collect()
}

/// Bind mounts as (host path, container path).
fn bind_mounts(service: &Value) -> Vec<(&str, &str)> {
    strings(&service["volumes"])
        .into_iter()
        .filter(|volume| volume.starts_with('.') || volume.starts_with('/'))
        .map(|volume| {
            let mut parts = volume.split(':');
            (
                parts.next().unwrap(),
                parts.next().expect("a container path"),
            )
        })
        .collect()
}

fn health_check(service: &Value) -> String {
    strings(&service["healthcheck"]["test"]).join(" ")
}

#[test]
fn every_service_has_an_image_a_health_check_and_its_files() {
    for file in ["docker-compose.yml", "docker-compose.console.yml"] {
        let compose = read_yaml(&repo_path(file));
        for (name, service) in services(&compose) {
            for (host, _) in bind_mounts(service) {
                assert!(
                    repo_path(host).exists(),
                    "{file}: {name} mounts {host}, which does not exist"
                );
            }
        }
    }
    let compose = compose();
    let services = services(&compose);
    assert!(services.len() >= 7, "services: {}", services.len());
    for (name, service) in services {
        assert!(
            service["image"].is_string() || !service["build"].is_null(),
            "{name} has neither an image nor a build"
        );
        for mapping in strings(&service["ports"]) {
            assert!(
                mapping.starts_with("127.0.0.1:"),
                "{name} publishes {mapping} beyond the host's loopback"
            );
        }
        let check = strings(&service["healthcheck"]["test"]);
        assert!(
            matches!(check.first(), Some(&"CMD") | Some(&"CMD-SHELL")) && check.len() > 1,
            "{name} has no health check: {check:?}"
        );
        let build = &service["build"];
        if let Some(context) = build.as_str().or(build["context"].as_str()) {
            let dockerfile = build["dockerfile"].as_str().unwrap_or("Dockerfile");
            assert!(
                repo_path(context).join(dockerfile).exists(),
                "{name}: no {dockerfile} in {context}"
            );
        }
    }
}

#[test]
fn the_catalogue_ports_agree_everywhere() {
    let compose = compose();
    let services = &compose["services"];
    let catalogue = &services["catalogue"];
    let command = strings(&catalogue["command"]);
    let grpc = port(flag(&command, "--grpc-addr").expect("--grpc-addr"));
    let admin = port(flag(&command, "--admin-addr").expect("--admin-addr"));
    assert!(!command.contains(&"--console"), "console is opt-in");

    let published = container_ports(catalogue);
    assert!(published.contains(&grpc), "{published:?} lacks {grpc}");
    assert!(published.contains(&admin), "{published:?} lacks {admin}");
    let check = health_check(catalogue);
    assert!(
        check.contains(&format!(":{admin}/readyz")),
        "health check {check:?} is not on the admin port {admin}"
    );

    let load = strings(&services["load-generator"]["command"]);
    let target = flag(&load, "--target").expect("--target");
    assert_eq!(target, format!("dns:///catalogue:{grpc}"));

    let database = flag(&command, "--database-url").expect("--database-url");
    assert!(database.contains("@postgres:5432/"), "{database}");
    assert!(!services["postgres"].is_null());

    let prometheus = read_yaml(&repo_path("otel/prometheus.yml"));
    let job = prometheus["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|job| job["job_name"] == "catalogue")
        .expect("a catalogue scrape job");
    // Every replica is a target of its own: found by DNS, not one address.
    let discovery = &job["dns_sd_configs"][0];
    assert_eq!(strings(&discovery["names"]), ["catalogue"]);
    assert_eq!(discovery["port"].as_u64(), Some(u64::from(admin)));

    // tokio-console, opt-in: the override publishes the port it listens on.
    let console = read_yaml(&repo_path("docker-compose.console.yml"));
    let console = &console["services"]["catalogue"];
    let command = strings(&console["command"]);
    assert!(command.contains(&"--console"));
    let console_port = port(flag(&command, "--console-addr").expect("--console-addr"));
    assert!(container_ports(console).contains(&console_port));
    assert_eq!(port(flag(&command, "--admin-addr").unwrap()), admin);
    assert_eq!(port(flag(&command, "--grpc-addr").unwrap()), grpc);
}

#[test]
fn the_catalogue_reaches_the_inventory_upstream_on_the_port_it_serves() {
    let compose = compose();
    let services = &compose["services"];
    let command = strings(&services["catalogue"]["command"]);
    let upstream_url = flag(&command, "--upstream-url").expect("--upstream-url");
    assert!(
        upstream_url.starts_with("http://inventory:"),
        "{upstream_url}"
    );

    let inventory = &services["inventory"];
    let command = strings(&inventory["command"]);
    assert_eq!(command.first(), Some(&"upstream"), "{command:?}");
    let grpc = port(flag(&command, "--addr").expect("--addr"));
    let admin = port(flag(&command, "--admin-addr").expect("--admin-addr"));
    assert_eq!(port(upstream_url), grpc);
    let check = health_check(inventory);
    assert!(
        check.contains(&format!(":{admin}/faults")),
        "health check {check:?} is not on the admin port {admin}"
    );
    // Published, so that the upstream can be made slow from the host.
    assert!(container_ports(inventory).contains(&admin));
}

#[test]
fn traces_flow_from_the_service_through_the_collector_to_tempo() {
    let compose = compose();
    let services = &compose["services"];
    let command = strings(&services["catalogue"]["command"]);
    let endpoint = flag(&command, "--otlp-endpoint").expect("--otlp-endpoint");
    assert!(endpoint.starts_with("http://otel-collector:"), "{endpoint}");

    let collector = read_yaml(&repo_path("otel/collector.yaml"));
    let receiver = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
        .as_str()
        .expect("an OTLP/gRPC receiver");
    assert_eq!(port(receiver), port(endpoint));

    let exporter = collector["exporters"]["otlp/tempo"]["endpoint"]
        .as_str()
        .expect("an OTLP exporter to Tempo");
    assert!(exporter.starts_with("tempo:"), "{exporter}");
    let tempo = read_yaml(&repo_path("otel/tempo.yaml"));
    let tempo_receiver = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
        .as_str()
        .expect("Tempo's OTLP/gRPC receiver");
    assert_eq!(port(tempo_receiver), port(exporter));
    assert!(!services["tempo"].is_null());

    // The collector's health check probes its health_check extension.
    let health = collector["extensions"]["health_check"]["endpoint"]
        .as_str()
        .expect("a health_check extension");
    let check = health_check(&services["otel-collector"]);
    assert!(check.contains(&format!(":{}/", port(health))), "{check}");
}

#[test]
fn collector_pipelines_use_only_defined_components_and_every_component_is_used() {
    let collector = read_yaml(&repo_path("otel/collector.yaml"));
    let defined = |kind: &str| -> Vec<String> {
        collector[kind]
            .as_mapping()
            .map(|components| {
                components
                    .keys()
                    .filter_map(|key| key.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let service = &collector["service"];
    let pipelines = service["pipelines"].as_mapping().expect("pipelines");
    assert!(!pipelines.is_empty());
    let mut used: Vec<String> = Vec::new();
    for (name, pipeline) in pipelines {
        for kind in ["receivers", "processors", "exporters"] {
            let components = strings(&pipeline[kind]);
            assert!(
                kind == "processors" || !components.is_empty(),
                "pipeline {name:?} has no {kind}"
            );
            for component in components {
                let known = defined(kind).contains(&component.to_owned())
                    || (kind != "processors"
                        && defined("connectors").contains(&component.to_owned()));
                assert!(
                    known,
                    "pipeline {name:?} uses undefined {kind} {component:?}"
                );
                used.push(format!("{kind}/{component}"));
            }
        }
    }
    for kind in ["receivers", "processors", "exporters"] {
        for component in defined(kind) {
            assert!(
                used.contains(&format!("{kind}/{component}")),
                "{kind} {component:?} is defined but in no pipeline"
            );
        }
    }
    for extension in strings(&service["extensions"]) {
        assert!(
            defined("extensions").contains(&extension.to_owned()),
            "undefined extension {extension:?}"
        );
    }
}

#[test]
fn prometheus_and_grafana_find_their_files_where_compose_mounts_them() {
    let compose = compose();
    let services = &compose["services"];

    // Prometheus resolves rule_files relative to its configuration file, on
    // a checkout (promtool) and in the container alike.
    let prometheus = read_yaml(&repo_path("otel/prometheus.yml"));
    let mounts = bind_mounts(&services["prometheus"]);
    let config_in_container = mounts
        .iter()
        .find(|(host, _)| Path::new(host) == Path::new("./otel/prometheus.yml"))
        .map(|(_, container)| Path::new(container))
        .expect("prometheus.yml is mounted");
    let config_dir = config_in_container.parent().unwrap();
    for pattern in strings(&prometheus["rule_files"]) {
        let dir = Path::new(pattern).parent().expect("rules in a directory");
        let on_checkout = repo_path("otel").join(dir);
        assert!(on_checkout.is_dir(), "{}", on_checkout.display());
        let in_container = config_dir.join(dir);
        assert!(
            mounts.iter().any(|(host, container)| {
                Path::new(container) == in_container
                    && repo_path(host).canonicalize().unwrap()
                        == on_checkout.canonicalize().unwrap()
            }),
            "{} is not mounted at {}",
            on_checkout.display(),
            in_container.display()
        );
    }

    let grafana = bind_mounts(&services["grafana"]);
    let provider = read_yaml(&repo_path(
        "grafana/provisioning/dashboards/dashboards.yaml",
    ));
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("a file provider path");
    assert!(
        grafana
            .iter()
            .any(|(host, container)| *container == path && *host == "./grafana/dashboards"),
        "grafana/dashboards is not mounted at {path}"
    );
    assert!(
        grafana
            .iter()
            .any(|(host, container)| *host == "./grafana/provisioning"
                && *container == "/etc/grafana/provisioning")
    );
    let password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
        .as_str()
        .unwrap();
    assert!(
        password.contains(":?"),
        "the admin password must be required, not defaulted: {password}"
    );
}

/// The catalogue's admin port listens on the compose network: it starts only
/// with a token or `--admin-insecure`, and without a token every health
/// check that calls it by its service name sends `Host: localhost` (an
/// admin port without a token refuses other names: DNS rebinding).
#[test]
fn the_admin_port_off_loopback_is_insecure_on_purpose_and_called_by_an_allowed_host() {
    let compose = compose();
    let command = strings(&compose["services"]["catalogue"]["command"]);
    let admin_addr = flag(&command, "--admin-addr").expect("--admin-addr");
    assert!(!admin_addr.starts_with("127."), "{admin_addr}");
    let token = command.contains(&"--admin-token");
    assert!(
        token || command.contains(&"--admin-insecure"),
        "the server refuses {admin_addr} without --admin-token or --admin-insecure"
    );
    if token {
        return;
    }
    let admin = format!("catalogue:{}", port(admin_addr));
    for (name, service) in services(&compose) {
        let check = health_check(service);
        if check.contains(&admin) {
            assert!(
                check.contains("Host: localhost"),
                "{name}'s health check {check:?} calls {admin} by name without Host: localhost"
            );
        }
    }
}
