//! Task events to containerd, forwarded in order by one thread so that a slow containerd never
//! blocks a task request. Shutdown flushes the queue first: a shim that exits with an event in
//! flight loses it and leaves containerd a half-read request.

use std::sync::mpsc::{channel, Sender};
use std::time::Duration;

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Context;

enum Message {
    Event(&'static str, Box<dyn MessageDyn>),
    /// Answered once every event queued before it has been forwarded.
    Flush(Sender<()>),
}

pub struct Events {
    tx: Sender<Message>,
}

impl Events {
    /// `address`: containerd's ttrpc socket, to connect again when containerd restarted (one
    /// shim serves a node's pods, and outlives a containerd).
    pub fn new(publisher: RemotePublisher, address: Option<String>, namespace: String) -> Self {
        let (tx, rx) = channel::<Message>();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                let mut publisher = publisher;
                for message in rx {
                    match message {
                        Message::Event(topic, event) => {
                            let again = address.as_ref().and_then(|_| {
                                let bytes = event.write_to_bytes_dyn().ok()?;
                                Some((event.descriptor_dyn(), bytes))
                            });
                            let Err(e) =
                                publisher.publish(Context::default(), topic, &namespace, event)
                            else {
                                continue;
                            };
                            // Once more, over a new connection.
                            let retried = match (&address, again) {
                                (Some(address), Some((descriptor, bytes))) => {
                                    RemotePublisher::new(address).ok().and_then(|p| {
                                        publisher = p;
                                        let event = descriptor.parse_from_bytes(&bytes).ok()?;
                                        publisher
                                            .publish(Context::default(), topic, &namespace, event)
                                            .ok()
                                    })
                                }
                                _ => None,
                            };
                            if retried.is_none() {
                                log::warn!("publishing {topic}: {e}");
                            }
                        }
                        Message::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .expect("starting the events thread");
        Events { tx }
    }

    pub fn send(&self, topic: &'static str, event: impl MessageDyn + 'static) {
        let _ = self.tx.send(Message::Event(topic, Box::new(event)));
    }

    /// Wait until the events queued so far have been forwarded (or `timeout` passed).
    pub fn flush(&self, timeout: Duration) {
        let (done_tx, done_rx) = channel();
        if self.tx.send(Message::Flush(done_tx)).is_ok() && done_rx.recv_timeout(timeout).is_err() {
            log::warn!("events not forwarded within {timeout:?}");
        }
    }
}
