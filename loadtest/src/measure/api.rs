//! The few HTTP calls the load tools make to a node: `/count`, `/counts`,
//! `/cluster`, `/metrics`, `/healthz`. Answers are parsed leniently (only the
//! fields used) and every failure is an error value, never a panic.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, anyhow};
use serde::Deserialize;

/// A topic's count as a node reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct TopicCount {
    /// Cluster-wide count.
    pub count: u64,
    /// The node's own count.
    #[serde(default)]
    pub local: u64,
    /// Live nodes included.
    #[serde(default)]
    pub nodes: u32,
}

/// A `/counts` listing.
#[derive(Debug, Clone, Deserialize)]
pub struct Counts {
    /// Cluster-wide sum over matching topics.
    pub total: u64,
    /// The listed topics.
    #[serde(default)]
    pub topics: Vec<Listed>,
}

/// One listed topic.
#[derive(Debug, Clone, Deserialize)]
pub struct Listed {
    /// Topic name.
    pub topic: String,
    /// Cluster-wide count.
    pub count: u64,
}

#[derive(Deserialize)]
struct Cluster {
    members: Vec<Member>,
}

#[derive(Deserialize)]
struct Member {
    state: String,
}

/// A small HTTP client for the node API.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
}

impl Api {
    /// A client with a per-request timeout that keeps at most `idle`
    /// connections per node (1: one worker's requests reuse one socket).
    pub fn new(timeout: Duration, idle: usize) -> anyhow::Result<Self> {
        let builder = reqwest::Client::builder().no_proxy().timeout(timeout).tcp_nodelay(true);
        Ok(Self {
            client: builder.pool_max_idle_per_host(idle).build()?,
        })
    }

    async fn get_text(&self, url: String) -> anyhow::Result<String> {
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response.text().await.with_context(|| format!("GET {url}: body"))?;
        if !status.is_success() {
            return Err(anyhow!("GET {url}: HTTP {status}: {body}"));
        }
        Ok(body)
    }

    /// `GET /count/{topic}`.
    pub async fn count(&self, node: SocketAddr, topic: &str) -> anyhow::Result<TopicCount> {
        let body = self.get_text(format!("http://{node}/count/{topic}")).await?;
        serde_json::from_str(&body).with_context(|| format!("/count/{topic} on {node}: {body}"))
    }

    /// `GET /counts?prefix=…&limit=…`.
    pub async fn counts(&self, node: SocketAddr, prefix: &str, limit: usize) -> anyhow::Result<Counts> {
        let body = self
            .get_text(format!("http://{node}/counts?prefix={prefix}&limit={limit}"))
            .await?;
        serde_json::from_str(&body).with_context(|| format!("/counts on {node}"))
    }

    /// Cluster-wide total of every topic (`/counts` with no prefix).
    pub async fn total(&self, node: SocketAddr) -> anyhow::Result<u64> {
        Ok(self.counts(node, "", 1).await?.total)
    }

    /// Members the node sees as alive, itself included.
    pub async fn alive_members(&self, node: SocketAddr) -> anyhow::Result<usize> {
        let body = self.get_text(format!("http://{node}/cluster")).await?;
        let cluster: Cluster = serde_json::from_str(&body).with_context(|| format!("/cluster on {node}"))?;
        Ok(cluster.members.iter().filter(|member| member.state == "alive").count())
    }

    /// Whether `/healthz` answers 200.
    pub async fn healthy(&self, node: SocketAddr) -> bool {
        self.client
            .get(format!("http://{node}/healthz"))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    }

    /// The `/metrics` text.
    pub async fn metrics(&self, node: SocketAddr) -> anyhow::Result<Metrics> {
        Ok(Metrics(self.get_text(format!("http://{node}/metrics")).await?))
    }
}

/// A Prometheus text exposition.
pub struct Metrics(pub String);

impl Metrics {
    /// Sum of every sample of `name` (all label sets); 0 when absent.
    pub fn sum(&self, name: &str) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let metric = series.split('{').next()?.trim();
                (metric == name).then(|| value.trim().parse::<f64>().ok()).flatten()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_sum_over_labels_and_skip_comments() {
        let text = "# HELP x y\n# TYPE a counter\na_total 3\na_total_other 9\nb_total{reason=\"x\"} 2\nb_total{reason=\"y\"} 5\n# EOF\n";
        let metrics = Metrics(text.into());
        assert_eq!(metrics.sum("a_total"), 3.0);
        assert_eq!(metrics.sum("b_total"), 7.0);
        assert_eq!(metrics.sum("c_total"), 0.0);
    }
}
