//! The few HTTP calls the load tools make to a node (`/count`, `/counts`,
//! `/cluster`, `/metrics`, `/healthz`). Answers are parsed leniently (only
//! the fields used) and every failure is an error value, never a panic.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, anyhow};
use serde::{Deserialize, de::DeserializeOwned};

/// A topic's count as a node reports it: cluster-wide, the node's own, and
/// the live nodes included.
#[derive(Debug, Clone, Deserialize)]
pub struct TopicCount {
    pub count: u64,
    #[serde(default)]
    pub local: u64,
    #[serde(default)]
    pub nodes: u32,
}

/// A `/counts` listing: the cluster-wide sum over matching topics, and the
/// listed topics.
#[derive(Debug, Clone, Deserialize)]
pub struct Counts {
    pub total: u64,
    #[serde(default)]
    pub topics: Vec<Listed>,
}

/// One listed topic and its cluster-wide count.
#[derive(Debug, Clone, Deserialize)]
pub struct Listed {
    pub topic: String,
    pub count: u64,
}

/// A small HTTP client for the node API.
#[derive(Clone)]
pub struct Api(reqwest::Client);

impl Api {
    /// A client with a per-request timeout that keeps at most `idle`
    /// connections per node (1: one worker's requests reuse one socket).
    pub fn new(timeout: Duration, idle: usize) -> anyhow::Result<Self> {
        let builder = reqwest::Client::builder().no_proxy().timeout(timeout).tcp_nodelay(true);
        Ok(Self(builder.pool_max_idle_per_host(idle).build()?))
    }

    async fn get_text(&self, node: SocketAddr, path: &str) -> anyhow::Result<String> {
        let url = format!("http://{node}{path}");
        let response = self.0.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response.text().await.with_context(|| format!("GET {url}: body"))?;
        if !status.is_success() {
            return Err(anyhow!("GET {url}: HTTP {status}: {body}"));
        }
        Ok(body)
    }

    async fn get<T: DeserializeOwned>(&self, node: SocketAddr, path: &str) -> anyhow::Result<T> {
        let body = self.get_text(node, path).await?;
        serde_json::from_str(&body).with_context(|| format!("{path} on {node}: {body}"))
    }

    /// `GET /count/{topic}`.
    pub async fn count(&self, node: SocketAddr, topic: &str) -> anyhow::Result<TopicCount> {
        self.get(node, &format!("/count/{topic}")).await
    }

    /// `GET /counts?prefix=…&limit=…`.
    pub async fn counts(&self, node: SocketAddr, prefix: &str, limit: usize) -> anyhow::Result<Counts> {
        self.get(node, &format!("/counts?prefix={prefix}&limit={limit}")).await
    }

    /// Cluster-wide total of every topic.
    pub async fn total(&self, node: SocketAddr) -> anyhow::Result<u64> {
        Ok(self.counts(node, "", 1).await?.total)
    }

    /// Members the node sees as alive, itself included.
    pub async fn alive_members(&self, node: SocketAddr) -> anyhow::Result<usize> {
        #[derive(Deserialize)]
        struct Member {
            state: String,
        }
        #[derive(Deserialize)]
        struct Cluster {
            members: Vec<Member>,
        }
        let cluster: Cluster = self.get(node, "/cluster").await?;
        Ok(cluster.members.iter().filter(|member| member.state == "alive").count())
    }

    /// Whether `/healthz` answers 200.
    pub async fn healthy(&self, node: SocketAddr) -> bool {
        self.get_text(node, "/healthz").await.is_ok()
    }

    /// The sum of every sample of each of `names` (all label sets) in
    /// `/metrics`; 0 for a name that is absent.
    pub async fn metrics<const N: usize>(&self, node: SocketAddr, names: [&str; N]) -> anyhow::Result<[f64; N]> {
        let text = self.get_text(node, "/metrics").await?;
        Ok(names.map(|name| sum(&text, name)))
    }
}

fn sum(metrics: &str, name: &str) -> f64 {
    let samples = metrics.lines().filter(|line| !line.starts_with('#'));
    samples
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series.split('{').next()?.trim() == name).then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_sum_over_labels_and_skip_comments() {
        let text = "# TYPE a counter\na_total 3\na_total_other 9\nb_total{reason=\"x\"} 2\nb_total{reason=\"y\"} 5\n";
        assert_eq!(["a_total", "b_total", "c_total"].map(|name| super::sum(text, name)), [3.0, 7.0, 0.0]);
    }
}
