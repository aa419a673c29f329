//! JSON bodies that the HTTP API and the live streams share, where the HTTP
//! spelling differs from the query layer's types.

use headcount_cluster::MemberState;
use serde::Serialize;

use crate::query::{Member, Members};

/// `/cluster` as JSON: member states spelled `alive`, `suspect`, `down`.
#[derive(Serialize)]
pub(crate) struct ClusterBody {
    #[serde(rename = "self")]
    self_name: String,
    members: Vec<MemberBody>,
}

#[derive(Serialize)]
struct MemberBody {
    #[serde(flatten)]
    member: Member,
    state: &'static str,
}

impl From<Members> for ClusterBody {
    fn from(members: Members) -> Self {
        Self {
            self_name: members.self_name,
            members: members
                .members
                .into_iter()
                .map(|member| MemberBody {
                    state: state_name(member.state),
                    member,
                })
                .collect(),
        }
    }
}

fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Down => "down",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_states_are_spelled_for_http() {
        let members = Members {
            self_name: "a".into(),
            members: vec![Member {
                name: "a".into(),
                addr: "127.0.0.1:1".into(),
                state: MemberState::Suspect,
                connections: 2,
                topics: 1,
                last_update_ms: 0,
                stale: false,
            }],
        };
        let body = serde_json::to_value(ClusterBody::from(members)).expect("serializes");
        assert_eq!(body["self"], "a");
        assert_eq!(body["members"][0]["state"], "suspect");
        assert_eq!(body["members"][0]["connections"], 2);
    }
}
