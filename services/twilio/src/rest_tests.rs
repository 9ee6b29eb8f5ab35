//! Tests for `rest.rs` and `resource.rs`: form encoding with repeated keys, Twilio's
//! validation codes, the error body, the call resource's exact field set and dates.
//! Consumes constants only; no state.

use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::form::parse_form;
use crate::resource::{CallResource, rfc2822};

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const CA: &str = "CA0123456789abcdef0123456789abcdef";

/// The curl example of §4 round-trips through the form body, repeated events in order.
#[test]
fn create_form_roundtrip() {
    let mut create = CreateCall::new(
        "+14155551234",
        "+15005550006",
        CallTarget::Twiml(r#"<Response><Connect><Stream url="wss://agent.example.com/twilio/media"/></Connect></Response>"#.into()),
    );
    create.status_callback = Some("https://agent.example.com/twilio/status".into());
    create.status_callback_event = vec!["initiated".into(), "answered".into(), "completed".into()];
    create.machine_detection = Some(crate::amd::MachineDetection::Enable);
    create.extra = vec![("Record".into(), "true".into())];
    let body = create.to_form();
    assert!(body.contains("StatusCallbackEvent=initiated&StatusCallbackEvent=answered&StatusCallbackEvent=completed"), "{body}");
    assert!(
        body.starts_with("To=%2B14155551234&From=%2B15005550006&Twiml=%3CResponse%3E"),
        "{body}"
    );
    let params = parse_form(body.as_bytes()).unwrap();
    assert_eq!(CreateCall::from_params(&params).unwrap(), create);
}

/// Invalid creates answer Twilio's 400 + 21xxx codes.
#[test]
fn create_validation_codes() {
    let cases: &[(&str, u32)] = &[
        ("From=%2B15005550006&Url=https://a/b", 21201),
        ("To=%2B14155551234&Url=https://a/b", 21213),
        ("To=4155551234&From=%2B15005550006&Url=https://a/b", 21211),
        ("To=%2B14155551234&From=bob&Url=https://a/b", 21212),
        ("To=%2B14155551234&From=%2B15005550006", 21205),
        (
            "To=%2B14155551234&From=%2B15005550006&Url=https://a/b&Twiml=%3CResponse/%3E",
            21205,
        ),
        (
            "To=%2B14155551234&From=%2B15005550006&Url=https://a/b&ApplicationSid=AP1",
            21205,
        ),
        (
            "To=%2B14155551234&From=%2B15005550006&Url=https://a/b&StatusCallbackEvent=hungup",
            21626,
        ),
        (
            "To=%2B14155551234&From=%2B15005550006&Url=https://a/b&Timeout=soon",
            21216,
        ),
    ];
    for (body, code) in cases {
        let error = CreateCall::from_params(&parse_form(body.as_bytes()).unwrap()).unwrap_err();
        assert_eq!((error.status, error.code), (400, *code), "{body}");
    }
    let long = format!(
        "To=%2B14155551234&From=client:bob&Twiml={}",
        "x".repeat(4001)
    );
    assert_eq!(
        CreateCall::from_params(&parse_form(long.as_bytes()).unwrap())
            .unwrap_err()
            .code,
        21205
    );
    let ok = "To=client:alice&From=%2B15005550006&ApplicationSid=AP1";
    assert!(CreateCall::from_params(&parse_form(ok.as_bytes()).unwrap()).is_ok());
}

/// Updates: hang-up and redirect forms; other statuses and empty updates are rejected.
#[test]
fn update_forms() {
    assert_eq!(UpdateCall::hang_up().to_form(), "Status=completed");
    let redirect = UpdateCall {
        url: Some("https://a/next".into()),
        method: Some("POST".into()),
        ..UpdateCall::default()
    };
    let params = parse_form(redirect.to_form().as_bytes()).unwrap();
    assert_eq!(UpdateCall::from_params(&params).unwrap(), redirect);
    for bad in ["Status=ringing", "Status=done", "", "Foo=1"] {
        let error = UpdateCall::from_params(&parse_form(bad.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(error.status, 400, "{bad}");
    }
}

/// The legacy error body has exactly code, message, more_info, status.
#[test]
fn error_body() {
    let body: serde_json::Value =
        serde_json::from_str(&ApiError::too_many_requests().to_json()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"code": 20429, "message": "Too Many Requests",
            "more_info": "https://www.twilio.com/docs/errors/20429", "status": 429})
    );
    assert_eq!(ApiError::not_found("/x").code, 20404);
    assert_eq!(ApiError::unauthorized().status, 401);
}

/// A queued outbound call renders every §4 field; numeric-looking values are strings.
#[test]
fn call_resource_json() {
    let now = rfc2822(UNIX_EPOCH + Duration::from_secs(1_283_286_988));
    assert_eq!(now, "Tue, 31 Aug 2010 20:36:28 +0000");
    let resource = CallResource::queued_outbound(AC, CA, "+14155551234", "+15005550006", &now);
    let json: serde_json::Value = serde_json::from_str(&resource.to_json()).unwrap();
    let fields = [
        "sid",
        "date_created",
        "date_updated",
        "parent_call_sid",
        "account_sid",
        "to",
        "to_formatted",
        "from",
        "from_formatted",
        "phone_number_sid",
        "status",
        "start_time",
        "end_time",
        "duration",
        "price",
        "price_unit",
        "direction",
        "answered_by",
        "api_version",
        "forwarded_from",
        "group_sid",
        "caller_name",
        "queue_time",
        "trunk_sid",
        "uri",
        "subresource_uris",
    ];
    let object = json.as_object().unwrap();
    assert_eq!(object.len(), fields.len());
    for field in fields {
        assert!(object.contains_key(field), "{field}");
    }
    assert_eq!(json["status"], "queued");
    assert_eq!(json["direction"], "outbound-api");
    assert_eq!(json["queue_time"], "0");
    assert_eq!(json["to_formatted"], "(415) 555-1234");
    assert_eq!(json["duration"], serde_json::Value::Null);
    assert_eq!(
        json["uri"],
        format!("/2010-04-01/Accounts/{AC}/Calls/{CA}.json")
    );
    assert_eq!(json["subresource_uris"].as_object().unwrap().len(), 9);
    let mut done = resource.clone();
    done.duration = Some("42".into());
    done.status = CallStatus::Completed;
    let back: CallResource = serde_json::from_str(&done.to_json()).unwrap();
    assert_eq!(back, done);
    assert!(
        serde_json::to_string(&done)
            .unwrap()
            .contains(r#""duration":"42""#)
    );
}

/// Dates, statuses and sids.
#[test]
fn small_facts() {
    assert_eq!(rfc2822(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
    assert_eq!(
        rfc2822(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "Tue, 29 Feb 2000 00:00:00 +0000"
    );
    for status in [
        CallStatus::InProgress,
        CallStatus::NoAnswer,
        CallStatus::Canceled,
    ] {
        assert_eq!(CallStatus::parse(status.as_str()), Some(status));
    }
    assert_eq!(CallStatus::parse("in_progress"), None);
    assert!(is_sid(CA, "CA") && !is_sid(CA, "AC") && !is_sid("CA123", "CA"));
    assert_eq!(
        calls_path(AC),
        format!("/2010-04-01/Accounts/{AC}/Calls.json")
    );
}
