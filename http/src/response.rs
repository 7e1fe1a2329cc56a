//! HTTP answers, one place: 204 without a body for a successful change, 200 with JSON for a
//! read, and `{"fault_message": "..."}` with the status that says who is at fault (Firecracker's
//! convention: 400 for the client's request, 500 for the VMM).

use crate::routes::RouteError;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use wisp_api::action::{ErrorKind, VmmData};
use wisp_api::vmm_channel::VmmResult;

/// Every response body the server produces.
pub type ApiResponse = Response<Full<Bytes>>;

/// Body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub fault_message: String,
}

/// An error answer with a JSON `fault_message`.
pub fn fault(status: StatusCode, message: impl Into<String>) -> ApiResponse {
    let body = Fault {
        fault_message: message.into(),
    };
    json(status, &body)
}

/// The answer for a request that could not become an action.
pub fn route_error(err: &RouteError) -> ApiResponse {
    let status = match err {
        RouteError::NotFound { .. } => StatusCode::NOT_FOUND,
        RouteError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        RouteError::EmptyBody { .. }
        | RouteError::InvalidBody { .. }
        | RouteError::IdMismatch { .. }
        | RouteError::NotSupported { .. } => StatusCode::BAD_REQUEST,
    };
    let mut resp = fault(status, err.to_string());
    if let RouteError::MethodNotAllowed { allowed, .. } = err {
        // RFC 9110 §15.5.6: a 405 must list the allowed methods.
        let list: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
        if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
    }
    resp
}

/// The answer for the VMM's result.
pub fn vmm_result(result: &VmmResult) -> ApiResponse {
    match result {
        Ok(VmmData::Empty) => empty(StatusCode::NO_CONTENT),
        Ok(VmmData::InstanceInfo(info)) => json(StatusCode::OK, info),
        Ok(VmmData::VmConfig(cfg)) => json(StatusCode::OK, cfg),
        Ok(VmmData::MachineConfig(mc)) => json(StatusCode::OK, mc),
        Ok(VmmData::Version(v)) => json(StatusCode::OK, v),
        Ok(VmmData::Balloon(b)) => json(StatusCode::OK, b),
        Ok(VmmData::BalloonStats(s)) => json(StatusCode::OK, s),
        Err(e) => {
            let status = match e.kind() {
                ErrorKind::BadRequest | ErrorKind::NotAllowedInState => StatusCode::BAD_REQUEST,
                ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            };
            fault(status, e.to_string())
        }
    }
}

fn empty(status: StatusCode) -> ApiResponse {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> ApiResponse {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        // Our models serialise infallibly (no maps with non-string keys); keep a plain answer
        // rather than a panic should that ever change.
        Err(e) => {
            let mut resp = Response::new(Full::new(Bytes::from(format!(
                "cannot serialise the response: {e}"
            ))));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp
        }
    }
}
