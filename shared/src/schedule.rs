//! Recurring syncs: a fixed interval or a cron expression (UTC).

use std::str::FromStr as _;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How a resource's syncs recur, as clients write it: `{"interval_seconds": 3600}` or
/// `{"cron": "0 3 * * *"}` (five fields, or six with seconds first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Seconds between syncs; give this or `cron`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<i32>,
    /// Cron expression in UTC; give this or `interval_seconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
}

/// One of the two shapes, as the OpenAPI document describes it (written by hand: the derive
/// cannot say "exactly one of").
impl utoipa::PartialSchema for ScheduleSpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let schema = serde_json::json!({
            "description": "How a resource's syncs recur (UTC); the deployment sets the shortest \
                interval (METASYNC_MIN_SCHEDULE_INTERVAL, default 300 s), for cron the shortest gap.",
            "oneOf": [
                {
                    "type": "object", "additionalProperties": false, "required": ["interval_seconds"],
                    "properties": {
                        "interval_seconds": { "type": "integer", "format": "int32", "minimum": 1, "maximum": i32::MAX },
                    },
                },
                {
                    "type": "object", "additionalProperties": false, "required": ["cron"],
                    "properties": {
                        "cron": {
                            "type": "string",
                            "description": "Five fields (or six, seconds first), e.g. `0 3 * * *`.",
                            "examples": ["0 3 * * *"],
                        },
                    },
                },
            ],
        });
        serde_json::from_value(schema).expect("a valid schema")
    }
}

impl utoipa::ToSchema for ScheduleSpec {}

/// A validated schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A fixed period between syncs.
    Interval(Duration),
    /// At the times the expression matches (UTC).
    Cron(Box<croner::Cron>),
}

impl Schedule {
    /// Validates a client's spec. The error is meant for a 422 body.
    pub fn parse(spec: &ScheduleSpec) -> Result<Self, String> {
        match (spec.interval_seconds, spec.cron.as_deref()) {
            (Some(_), Some(_)) => Err("give either `interval_seconds` or `cron`, not both".into()),
            (None, None) => Err("a schedule needs `interval_seconds` or `cron`".into()),
            (Some(secs), None) if secs < 1 => Err("`interval_seconds` must be at least 1".into()),
            (Some(secs), None) => Ok(Self::Interval(Duration::seconds(i64::from(secs)))),
            (None, Some(expr)) => croner::Cron::from_str(expr)
                .map(|cron| Self::Cron(Box::new(cron)))
                .map_err(|e| format!("`cron` is not a valid cron expression: {e}")),
        }
    }

    /// From the stored columns; `None` when the resource has no schedule.
    pub fn from_columns(interval_seconds: Option<i32>, cron: Option<&str>) -> Option<Self> {
        Self::parse(&ScheduleSpec {
            interval_seconds,
            cron: cron.map(str::to_owned),
        })
        .ok()
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Interval(every) => Some(after + *every),
            Self::Cron(cron) => cron.find_next_occurrence(&after, false).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_steps() {
        let at = DateTime::parse_from_rfc3339("2026-01-01T10:17:00Z")
            .unwrap()
            .to_utc();
        let spec = ScheduleSpec {
            interval_seconds: None,
            cron: Some("0 * * * *".into()),
        };
        let next = Schedule::parse(&spec).unwrap().next_after(at).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-01-01T11:00:00+00:00");
        let spec = ScheduleSpec {
            interval_seconds: Some(60),
            cron: None,
        };
        assert_eq!(
            Schedule::parse(&spec).unwrap().next_after(at).unwrap(),
            at + Duration::seconds(60)
        );
        assert!(
            Schedule::parse(&ScheduleSpec {
                interval_seconds: None,
                cron: Some("nope".into())
            })
            .is_err()
        );
        assert!(
            Schedule::parse(&ScheduleSpec {
                interval_seconds: Some(0),
                cron: None
            })
            .is_err()
        );
    }
}
