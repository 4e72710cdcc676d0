//! Registering this instance with its agent, and deregistering it.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use reqwest::Method;
use serde::Serialize;

use super::{
    agent::{ConsulClient, Instance, REQUEST_TIMEOUT, go_duration},
    error::ConsulError,
    settings::ConsulConfig,
};

/// The tag every registration carries.
const TAG: &str = "grpc";

/// What this instance tells the agent about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The logical name clients resolve.
    pub service_name: String,
    /// `NAME-HOST-PORT`. Unique per agent, so replicas on one host do not
    /// replace each other, and stable, so a restarted instance replaces its
    /// own earlier registration instead of adding a second.
    pub service_id: String,
    /// Where other hosts reach the gRPC listener; the agent's health check
    /// calls it there too.
    pub instance: Instance,
    /// The gRPC health service the check asks about: the catalogue's, not
    /// the server's (""), so the check fails as soon as a draining instance
    /// turns it NOT_SERVING.
    pub health_service: String,
    pub check_interval: Duration,
    /// How long the check may stay critical before the agent removes the
    /// instance: the backstop for a process that died without deregistering.
    pub deregister_critical_service_after: Duration,
}

impl Registration {
    /// The registration of the gRPC listener bound at `grpc_addr`: at the
    /// advertise address if one is configured, else at `grpc_addr`, which
    /// then must not be unspecified (`0.0.0.0` tells other hosts nothing).
    pub fn new(
        config: &ConsulConfig,
        grpc_addr: SocketAddr,
        health_service: &str,
    ) -> Result<Self, ConsulError> {
        let instance = match &config.consul_advertise_addr {
            Some(advertised) => Instance {
                host: advertised.host.clone(),
                port: advertised.port.unwrap_or(grpc_addr.port()),
            },
            None if grpc_addr.ip().is_unspecified() => {
                return Err(ConsulError::UnspecifiedAdvertiseAddr(grpc_addr));
            }
            None => Instance::from(grpc_addr),
        };
        Ok(Self {
            service_id: service_id(&config.consul_service_name, &instance),
            service_name: config.consul_service_name.clone(),
            instance,
            health_service: health_service.to_owned(),
            check_interval: config.consul_check_interval,
            deregister_critical_service_after: config.consul_deregister_critical_service_after,
        })
    }

    /// The body of `PUT /v1/agent/service/register`, in Consul's names.
    fn definition(&self) -> ServiceDefinition<'_> {
        ServiceDefinition {
            name: &self.service_name,
            id: &self.service_id,
            address: &self.instance.host,
            port: self.instance.port,
            tags: [TAG],
            meta: BTreeMap::from([("version", env!("CARGO_PKG_VERSION"))]),
            check: CheckDefinition {
                grpc: format!("{}/{}", self.instance, self.health_service),
                grpc_use_tls: false,
                interval: go_duration(self.check_interval),
                deregister_critical_service_after: go_duration(
                    self.deregister_critical_service_after,
                ),
            },
        }
    }
}

/// `NAME-HOST-PORT`, anything but ASCII letters, digits, `.`, `-` and `_`
/// (an IPv6 address's colons) turned into `-`, so that the ID is one plain
/// path segment of the deregister URL.
fn service_id(name: &str, instance: &Instance) -> String {
    format!("{name}-{}-{}", instance.host, instance.port)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceDefinition<'a> {
    name: &'a str,
    #[serde(rename = "ID")]
    id: &'a str,
    address: &'a str,
    port: u16,
    tags: [&'static str; 1],
    meta: BTreeMap<&'static str, &'static str>,
    check: CheckDefinition,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CheckDefinition {
    /// `HOST:PORT/SERVICE`: the standard gRPC health check of SERVICE.
    #[serde(rename = "GRPC")]
    grpc: String,
    #[serde(rename = "GRPCUseTLS")]
    grpc_use_tls: bool,
    interval: String,
    deregister_critical_service_after: String,
}

/// Registers this instance with the agent once it serves, and deregisters it
/// first thing at shutdown, before health turns NOT_SERVING and the drain
/// begins, so that clients resolving through Consul stop picking it while it
/// still answers.
///
/// A registration that fails fails start-up, with the agent's answer in the
/// error. With `--consul-addr` set, Consul is how clients find this
/// instance: one that serves unregistered is capacity nobody uses, and a
/// warning in its log is easily missed, while a mistyped address or a
/// refused definition is best seen at once. An agent that is not up yet is
/// the supervisor's to retry (a restart with backoff), as for a database
/// that is not up yet.
///
/// A deregistration that fails is the caller's to log: shutdown goes on, the
/// check fails from the moment health turns NOT_SERVING, and the agent
/// removes the instance after `deregister_critical_service_after`.
#[derive(Debug, Clone)]
pub struct Registrar {
    client: ConsulClient,
    registration: Registration,
}

impl Registrar {
    /// `None` when no agent is configured.
    pub fn from_config(
        config: &ConsulConfig,
        grpc_addr: SocketAddr,
        health_service: &str,
    ) -> Result<Option<Self>, ConsulError> {
        let Some(agent) = &config.consul_addr else {
            return Ok(None);
        };
        Ok(Some(Self {
            client: ConsulClient::new(agent.clone())?,
            registration: Registration::new(config, grpc_addr, health_service)?,
        }))
    }

    /// What is registered.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// Registers (or re-registers: the ID is stable) this instance.
    pub async fn register(&self) -> Result<(), ConsulError> {
        self.client.register(&self.registration).await?;
        tracing::info!(
            agent = %self.client.agent(),
            service_id = %self.registration.service_id,
            instance = %self.registration.instance,
            "registered with consul"
        );
        Ok(())
    }

    /// Removes this instance; takes at most 5 seconds, on top of the
    /// shutdown grace period.
    pub async fn deregister(&self) -> Result<(), ConsulError> {
        self.client
            .deregister(&self.registration.service_id)
            .await?;
        tracing::info!(
            service_id = %self.registration.service_id,
            "deregistered from consul"
        );
        Ok(())
    }
}

impl ConsulClient {
    /// `PUT /v1/agent/service/register`.
    pub async fn register(&self, registration: &Registration) -> Result<(), ConsulError> {
        let url = self.agent().endpoint(&["agent", "service", "register"]);
        let body = serde_json::to_vec(&registration.definition())
            .expect("a service definition of strings and numbers serialises");
        self.send(Method::PUT, url, Some(body), REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// `PUT /v1/agent/service/deregister/:service_id`.
    pub async fn deregister(&self, service_id: &str) -> Result<(), ConsulError> {
        let url = self
            .agent()
            .endpoint(&["agent", "service", "deregister", service_id]);
        self.send(Method::PUT, url, None, REQUEST_TIMEOUT)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &[&str]) -> ConsulConfig {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            consul: ConsulConfig,
        }
        let args = ["catalogue", "--consul-addr", "127.0.0.1:8500"];
        Flags::try_parse_from(args.iter().chain(extra))
            .expect("flags parse")
            .consul
    }

    #[test]
    fn the_registration_defaults_to_the_bound_grpc_address() {
        let registration = Registration::new(
            &config(&[]),
            "127.0.0.1:50051".parse().unwrap(),
            "catalogue.v1.CatalogueService",
        )
        .unwrap();
        assert_eq!(registration.service_id, "catalogue-127.0.0.1-50051");
        assert_eq!(registration.instance.to_string(), "127.0.0.1:50051");
    }

    #[test]
    fn an_unspecified_grpc_address_needs_an_advertise_address() {
        let grpc_addr = "0.0.0.0:50051".parse().unwrap();
        let error = Registration::new(&config(&[]), grpc_addr, "s").unwrap_err();
        assert!(
            error.to_string().contains("--consul-advertise-addr"),
            "{error}"
        );

        let advertised = config(&["--consul-advertise-addr", "fd00::7"]);
        let registration = Registration::new(&advertised, grpc_addr, "s").unwrap();
        assert_eq!(registration.instance.to_string(), "[fd00::7]:50051");
        assert_eq!(registration.service_id, "catalogue-fd00--7-50051");
    }

    #[test]
    fn the_definition_uses_consul_field_names_and_go_durations() {
        let config = config(&[
            "--consul-service-name",
            "shop",
            "--consul-advertise-addr",
            "[fd00::7]:7000",
            "--consul-check-interval",
            "500ms",
            "--consul-deregister-critical-service-after",
            "90m",
        ]);
        let registration =
            Registration::new(&config, "127.0.0.1:1".parse().unwrap(), "pkg.Svc").unwrap();

        let body = serde_json::to_value(registration.definition()).unwrap();

        assert_eq!(
            body,
            serde_json::json!({
                "Name": "shop",
                "ID": "shop-fd00--7-7000",
                "Address": "fd00::7",
                "Port": 7000,
                "Tags": ["grpc"],
                "Meta": {"version": env!("CARGO_PKG_VERSION")},
                "Check": {
                    "GRPC": "[fd00::7]:7000/pkg.Svc",
                    "GRPCUseTLS": false,
                    "Interval": "500ms",
                    "DeregisterCriticalServiceAfter": "1h30m",
                },
            })
        );
    }
}
