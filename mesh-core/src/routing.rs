//! What a mesh's routing answer means for a delivery: the `ROUTING_APP` payload a radio hands
//! its client for a `want_ack` packet (`Routing.error_reason`, `meshtastic/mesh.proto`), read
//! as a [`DeliveryStatus`] so every endpoint that carries such answers reads them alike.
//!
//! | reason                                                   | status      |
//! |----------------------------------------------------------|-------------|
//! | `NONE` (an ACK, implicit or from the destination)        | `Delivered` |
//! | `TOO_LARGE`, `NO_CHANNEL`, `BAD_REQUEST`, `NOT_AUTHORIZED`, `PKI_UNKNOWN_PUBKEY` | `Rejected`: sending it again gets the same answer |
//! | anything else (`MAX_RETRANSMIT`, `NO_RESPONSE`, `DUTY_CYCLE_LIMIT`, `RATE_LIMIT_EXCEEDED`, unknown codes) | `Failed`: worth another try |

use prost::Message;

use crate::delivery::DeliveryStatus;
use crate::proto::{self, routing};

/// Reads a `Routing` payload as a delivery outcome. A payload that is not a `Routing` with an
/// error reason is a failure (it confirms nothing).
pub fn delivery_status(payload: &[u8]) -> DeliveryStatus {
    let Ok(answer) = proto::Routing::decode(payload) else {
        return DeliveryStatus::failed("undecodable routing answer");
    };
    let Some(routing::Variant::ErrorReason(code)) = answer.variant else {
        return DeliveryStatus::failed("routing answer without an error reason");
    };
    status_of_error(code)
}

/// The outcome a `Routing.Error` code stands for.
pub fn status_of_error(code: i32) -> DeliveryStatus {
    use routing::Error as E;
    let Ok(error) = E::try_from(code) else {
        return DeliveryStatus::failed(format!("mesh did not deliver it: routing error {code}"));
    };
    let name = error.as_str_name();
    match error {
        E::None => DeliveryStatus::Delivered,
        E::TooLarge | E::NoChannel | E::BadRequest | E::NotAuthorized | E::PkiUnknownPubkey => {
            DeliveryStatus::rejected(format!("mesh refused it: {name}"))
        }
        _ => DeliveryStatus::failed(format!("mesh did not deliver it: {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(error: routing::Error) -> Vec<u8> {
        proto::Routing {
            variant: Some(routing::Variant::ErrorReason(error as i32)),
        }
        .encode_to_vec()
    }

    #[test]
    fn an_ack_is_delivered_and_naks_are_failed_or_rejected_by_reason() {
        use routing::Error as E;
        assert_eq!(delivery_status(&answer(E::None)), DeliveryStatus::Delivered);
        for e in [
            E::TooLarge,
            E::NoChannel,
            E::BadRequest,
            E::NotAuthorized,
            E::PkiUnknownPubkey,
        ] {
            let s = delivery_status(&answer(e));
            assert!(
                matches!(&s, DeliveryStatus::Rejected { reason } if reason.contains(e.as_str_name())),
                "{s:?}"
            );
        }
        for e in [
            E::MaxRetransmit,
            E::NoResponse,
            E::DutyCycleLimit,
            E::RateLimitExceeded,
            E::Timeout,
        ] {
            let s = delivery_status(&answer(e));
            assert!(
                matches!(&s, DeliveryStatus::Failed { reason } if reason.contains(e.as_str_name())),
                "{s:?}"
            );
        }
    }

    #[test]
    fn unknown_codes_and_garbage_confirm_nothing() {
        let s = status_of_error(999);
        assert!(matches!(&s, DeliveryStatus::Failed { reason } if reason.contains("999")));
        assert!(!delivery_status(b"\xff\xff").is_delivered());
        assert!(!delivery_status(&[]).is_delivered(), "no reason at all");
        // A route reply (not an error reason) is not an ACK either.
        let route = proto::Routing {
            variant: Some(routing::Variant::RouteReply(Default::default())),
        }
        .encode_to_vec();
        assert!(!delivery_status(&route).is_delivered());
    }
}
