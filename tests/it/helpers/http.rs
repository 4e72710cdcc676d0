//! Requests to a test app's admin port.

use super::{TestApp, metrics::value};

impl TestApp {
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// Scrapes `/metrics` and parses it as Prometheus text.
    pub async fn scrape(&self) -> prometheus_parse::Scrape {
        scrape(&self.admin_url("/metrics")).await
    }

    /// Sets faults through the admin API; returns the HTTP status and body.
    pub async fn put_faults(&self, body: &str) -> (u16, String) {
        let response = reqwest::Client::new()
            .put(self.admin_url("/faults"))
            .body(body.to_owned())
            .send()
            .await
            .expect("admin answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// Waits until `in_flight` GetProduct calls are being handled.
    pub async fn wait_for_in_flight(&self, in_flight: f64) {
        for _ in 0..1000 {
            let scrape = self.scrape().await;
            if value(
                &scrape,
                "grpc_server_in_flight_requests",
                &[("grpc_method", "GetProduct")],
            ) == Some(in_flight)
            {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("never reached {in_flight} calls in flight");
    }

    /// Waits (scraping every 20 ms, at most 30 s) until the one sample of
    /// `name` with `labels` equals `expected`.
    pub async fn wait_for_value(&self, name: &str, labels: &[(&str, &str)], expected: f64) {
        let mut last = None;
        for _ in 0..1500 {
            last = value(&self.scrape().await, name, labels);
            if last == Some(expected) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("{name} {labels:?} stayed {last:?}, never {expected}");
    }
}

/// Fetches `url` (a `/metrics` endpoint) and parses it as Prometheus text.
pub async fn scrape(url: &str) -> prometheus_parse::Scrape {
    let body = reqwest::get(url)
        .await
        .expect("admin answers")
        .text()
        .await
        .expect("metrics body");
    prometheus_parse::Scrape::parse(body.lines().map(|line| Ok(line.to_owned())))
        .expect("valid Prometheus text")
}
