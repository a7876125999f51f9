//! `http-proxy`: a `wasi:http/proxy` component for the serving tests. Every request gets
//! `200 OK` with the body `hello from wasi:http <path>\nGREETING=<$GREETING>\n`, and one line
//! `request <METHOD> <path>` on stdout. `/trap` panics (a trap) before answering.
#![cfg(all(target_os = "wasi", target_env = "p2"))]

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Proxy);

struct Proxy;

impl wasip2::exports::http::incoming_handler::Guest for Proxy {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        println!("request {} {path}", method_name(&request.method()));
        if path == "/trap" {
            panic!("asked to trap");
        }
        let greeting = std::env::var("GREETING").unwrap_or_default();
        let body_text = format!("hello from wasi:http {path}\nGREETING={greeting}\n");

        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("the body of a new response");
        ResponseOutparam::set(response_out, Ok(response));
        let mut out = body.write().expect("the body's stream");
        out.write_all(body_text.as_bytes()).expect("writing the body");
        out.flush().expect("flushing the body");
        drop(out);
        OutgoingBody::finish(body, None).expect("finishing the body");
    }
}

fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}
