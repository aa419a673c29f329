//! The few HTTP calls the load tools make to a node (`/count`, `/counts`, `/cluster`, `/metrics`, `/healthz`).
//! Answers are parsed leniently (only the fields used) and every failure is an error value, never a panic.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A small HTTP client for the node API.
#[derive(Clone)]
pub struct Api(reqwest::Client);

impl Api {
    /// A client with a per-request timeout that keeps at most `idle` connections per node (1: one worker's requests
    /// reuse one socket), connecting from `source` if given.
    pub fn new(timeout: Duration, idle: usize, source: Option<IpAddr>) -> anyhow::Result<Self> {
        let builder = reqwest::Client::builder().no_proxy().timeout(timeout).tcp_nodelay(true);
        let builder = builder.pool_max_idle_per_host(idle).local_address(source);
        Ok(Self(builder.build()?))
    }

    async fn text(&self, node: SocketAddr, path: &str) -> anyhow::Result<String> {
        let url = format!("http://{node}{path}");
        let response = self.0.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response.text().await.with_context(|| format!("GET {url}: body"))?;
        if !status.is_success() {
            bail!("GET {url}: HTTP {status}: {body}");
        }
        Ok(body)
    }

    async fn get<T: DeserializeOwned>(&self, node: SocketAddr, path: &str) -> anyhow::Result<T> {
        let body = self.text(node, path).await?;
        serde_json::from_str(&body).with_context(|| format!("{path} on {node}: {body}"))
    }

    /// `GET /count/{topic}`: the topic's count cluster-wide (`count`), on the node (`local`), over how many live
    /// nodes (`nodes`).
    pub async fn count(&self, node: SocketAddr, topic: &str) -> anyhow::Result<Value> {
        self.get(node, &format!("/count/{topic}")).await
    }

    /// The topics listed by `GET /counts?prefix=…&limit=…`, with their counts.
    pub async fn counts(&self, node: SocketAddr, prefix: &str, limit: usize) -> anyhow::Result<Vec<(String, u64)>> {
        let path = format!("/counts?prefix={prefix}&limit={limit}");
        let counts: Value = self.get(node, &path).await?;
        let topic = |t: &Value| Some((t["topic"].as_str()?.to_owned(), t["count"].as_u64()?));
        let listed = counts["topics"].as_array().into_iter().flatten();
        Ok(listed.filter_map(topic).collect())
    }

    /// Cluster-wide total of every topic (`/counts`).
    pub async fn total(&self, node: SocketAddr) -> anyhow::Result<u64> {
        let counts: Value = self.get(node, "/counts?limit=1").await?;
        counts["total"].as_u64().context("/counts without a total")
    }

    /// Members the node sees as alive, itself included.
    pub async fn alive_members(&self, node: SocketAddr) -> anyhow::Result<usize> {
        let cluster: Value = self.get(node, "/cluster").await?;
        let members = cluster["members"].as_array().context("/cluster without members")?;
        Ok(members.iter().filter(|member| member["state"] == "alive").count())
    }

    /// Whether `/healthz` answers 200.
    pub async fn healthy(&self, node: SocketAddr) -> bool {
        self.text(node, "/healthz").await.is_ok()
    }

    /// The sum over every label set of each of `names` in `/metrics`; 0 for a name that is absent.
    pub async fn metrics<const N: usize>(&self, node: SocketAddr, names: [&str; N]) -> anyhow::Result<[f64; N]> {
        let all = samples(&self.text(node, "/metrics").await?);
        let named = |name, (series, _): &&(String, f64)| series.split('{').next() == Some(name);
        Ok(names.map(|name| all.iter().filter(|s| named(name, s)).map(|(_, value)| value).sum()))
    }
}

/// Every sample of a `/metrics` text: series (`name{label="…"}`) and value.
pub fn samples(metrics: &str) -> Vec<(String, f64)> {
    let sample = |line: &str| {
        let (series, value) = line.rsplit_once(' ')?;
        Some((series.trim().to_owned(), value.trim().parse().ok()?))
    };
    let lines = metrics.lines().filter(|line| !line.starts_with('#'));
    lines.filter_map(sample).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_samples_keep_labels_and_skip_comments() {
        let text = "# TYPE a counter\na_total 3\nb_total{reason=\"x\"} 2\n";
        let want = [("a_total".into(), 3.0), ("b_total{reason=\"x\"}".into(), 2.0)];
        assert_eq!(super::samples(text), want);
    }
}
