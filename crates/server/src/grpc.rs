//! The public gRPC API (`headcount.v1`): Counter, Cluster and Stats,
//! answered from the same query layer and history as HTTP, with the same topic, limit and access rules
//! (`authorization: Bearer TOKEN` metadata where HTTP wants the header).

use std::{pin::Pin, sync::Arc};

use futures_util::{Stream, StreamExt, stream};
use headcount_history::History;
use headcount_proto::v1::{
    self, GetCountRequest, GetStatsRequest, ListMembersRequest, ListMembersResponse, ListStatsRequest,
    ListStatsResponse, ListTopicsRequest, ListTopicsResponse, MemberState, TopicTotal, WatchCountRequest,
    cluster_server, counter_server, stats_server,
};
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    access::{Access, Unauthorized},
    admission::{Admission, Admitted, Refusal},
    error::{NO_HISTORY, stats_status},
    metrics::NodeMetrics,
    params::{ListRequest, day, topic},
    push::Hub,
    query::{Query, TopicCount},
};

/// `headcount.v1.Counter`.
#[derive(Clone)]
pub struct CounterApi {
    query: Query,
    hub: Arc<Hub>,
    access: Arc<Access>,
    admission: Arc<Admission>,
    metrics: NodeMetrics,
    shutdown: CancellationToken,
}

impl CounterApi {
    /// Serves counts from `query`, watches through `hub` under the limits of
    /// `admission`; streams end on `shutdown`.
    pub fn new(
        query: Query,
        hub: Arc<Hub>,
        access: Arc<Access>,
        admission: Arc<Admission>,
        metrics: NodeMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            query,
            hub,
            access,
            admission,
            metrics,
            shutdown,
        }
    }

    /// A watch stream is a watcher like a `?watch=1` websocket: it holds a
    /// per-IP and a node-wide place while it is open.
    fn admit_watcher<T>(&self, request: &Request<T>) -> Result<Admitted, Status> {
        let peer = request
            .remote_addr()
            .ok_or_else(|| Status::internal("no peer address"))?;
        let ip = self
            .admission
            .client_ip(peer, &request.metadata().clone().into_headers());
        self.admission.admit(ip).map_err(|refusal| {
            self.metrics.refused.get_or_create(&[("reason", refusal.label())]).inc();
            match refusal {
                Refusal::PerIp => Status::resource_exhausted(refusal.to_string()),
                Refusal::NodeFull | Refusal::Origin => Status::unavailable(refusal.to_string()),
            }
        })
    }
}

impl From<TopicCount> for v1::TopicCount {
    fn from(count: TopicCount) -> Self {
        Self {
            topic: count.topic,
            count: count.count,
            local: count.local,
            nodes: count.nodes,
        }
    }
}

type CountStream = Pin<Box<dyn Stream<Item = Result<v1::TopicCount, Status>> + Send>>;

#[tonic::async_trait]
impl counter_server::Counter for CounterApi {
    async fn get_count(&self, request: Request<GetCountRequest>) -> Result<Response<v1::TopicCount>, Status> {
        let topic = topic(&request.into_inner().topic)?;
        Ok(Response::new(self.query.count(&topic).into()))
    }

    async fn list_topics(&self, request: Request<ListTopicsRequest>) -> Result<Response<ListTopicsResponse>, Status> {
        let authorization = bearer(request.metadata()).map(str::to_owned);
        let request = request.into_inner();
        let request = ListRequest::from_grpc(request.prefix, request.limit)?;
        self.access
            .listing(authorization.as_deref(), &request.prefix)
            .map_err(unauthenticated)?;
        let list = self
            .query
            .list_for_request(&request.prefix, request.limit)
            .await
            .map_err(|busy| Status::unavailable(busy.to_string()))?;
        let topics = list
            .topics
            .into_iter()
            .map(|t| TopicTotal {
                topic: t.topic,
                count: t.count,
            })
            .collect();
        Ok(Response::new(ListTopicsResponse {
            total: list.total,
            topics,
        }))
    }

    type WatchCountStream = CountStream;

    async fn watch_count(&self, request: Request<WatchCountRequest>) -> Result<Response<CountStream>, Status> {
        let admitted = self.admit_watcher(&request)?;
        let topic = topic(&request.into_inner().topic)?;
        let first = self.query.count(&topic);
        let changes = WatchStream::from_changes(self.hub.subscribe(&topic, first.count));
        let query = self.query.clone();
        let watcher = self.metrics.watcher();
        let updates = changes.map(move |count| {
            let _held = (&watcher, &admitted);
            let now = query.count(&topic);
            Ok(v1::TopicCount { count, ..now.into() })
        });
        let stream = stream::once(async move { Ok(first.into()) })
            .chain(updates)
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}

/// `headcount.v1.Cluster`.
#[derive(Clone)]
pub struct ClusterApi {
    query: Query,
    access: Arc<Access>,
}

impl ClusterApi {
    /// Serves membership from `query` to holders of the admin token.
    pub fn new(query: Query, access: Arc<Access>) -> Self {
        Self { query, access }
    }
}

/// The `authorization` metadata of a gRPC request, if readable.
fn bearer(metadata: &MetadataMap) -> Option<&str> {
    metadata.get("authorization").and_then(|value| value.to_str().ok())
}

fn unauthenticated(error: Unauthorized) -> Status {
    Status::unauthenticated(error.to_string())
}

/// Lets a call through only with the admin token (for whole services:
/// reflection).
pub(crate) fn admin_only(access: Arc<Access>) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        access.admin(bearer(request.metadata())).map_err(unauthenticated)?;
        Ok(request)
    }
}

#[tonic::async_trait]
impl cluster_server::Cluster for ClusterApi {
    async fn list_members(
        &self,
        request: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        self.access.admin(bearer(request.metadata())).map_err(unauthenticated)?;
        let members = self.query.members();
        let list = members
            .members
            .into_iter()
            .map(|member| v1::Member {
                name: member.name,
                addr: member.addr,
                state: match member.state {
                    headcount_cluster::MemberState::Alive => MemberState::Alive,
                    headcount_cluster::MemberState::Suspect => MemberState::Suspect,
                    headcount_cluster::MemberState::Down => MemberState::Down,
                }
                .into(),
                connections: member.connections,
                topics: member.topics,
                last_update_ms: member.last_update_ms,
                stale: member.stale,
            })
            .collect();
        Ok(Response::new(ListMembersResponse {
            self_: members.self_name,
            members: list,
        }))
    }
}

/// `headcount.v1.Stats`.
#[derive(Clone)]
pub struct StatsApi {
    history: Option<History>,
    access: Arc<Access>,
}

impl StatsApi {
    /// Serves `history` (none: `--no-history`) under the listing rule of
    /// `access`.
    pub fn new(history: Option<History>, access: Arc<Access>) -> Self {
        Self { history, access }
    }

    fn history(&self) -> Result<&History, Status> {
        self.history
            .as_ref()
            .ok_or_else(|| Status::failed_precondition(NO_HISTORY))
    }
}

#[tonic::async_trait]
impl stats_server::Stats for StatsApi {
    async fn get_stats(&self, request: Request<GetStatsRequest>) -> Result<Response<v1::TopicStats>, Status> {
        let authorization = bearer(request.metadata()).map(str::to_owned);
        let request = request.into_inner();
        let topic = topic(&request.topic)?;
        let (from, to) = (day(Some(&request.from), "from")?, day(Some(&request.to), "to")?);
        self.access
            .listing(authorization.as_deref(), &topic)
            .map_err(unauthenticated)?;
        let stats = self
            .history()?
            .topic_stats(topic, from, to)
            .await
            .map_err(stats_status)?;
        Ok(Response::new(v1::TopicStats {
            topic: stats.topic,
            from: stats.from,
            to: stats.to,
            views: stats.views,
            visitors: stats.visitors,
            peak: stats.peak,
            days: stats
                .days
                .into_iter()
                .map(|day| v1::DayStats {
                    date: day.date,
                    views: day.views,
                    visitors: day.visitors,
                    peak: day.peak,
                })
                .collect(),
        }))
    }

    async fn list_stats(&self, request: Request<ListStatsRequest>) -> Result<Response<ListStatsResponse>, Status> {
        let authorization = bearer(request.metadata()).map(str::to_owned);
        let request = request.into_inner();
        let date = day(Some(&request.date), "date")?;
        let list = ListRequest::from_grpc(request.prefix, request.limit)?;
        self.access
            .listing(authorization.as_deref(), &list.prefix)
            .map_err(unauthenticated)?;
        let stats = self
            .history()?
            .list_stats(date, list.prefix, list.limit)
            .await
            .map_err(stats_status)?;
        Ok(Response::new(ListStatsResponse {
            date: stats.date,
            views: stats.views,
            visitors: stats.visitors,
            topics: stats
                .topics
                .into_iter()
                .map(|topic| v1::TopicDayStats {
                    topic: topic.topic,
                    views: topic.views,
                    visitors: topic.visitors,
                    peak: topic.peak,
                })
                .collect(),
        }))
    }
}
