//! Task events to containerd, forwarded in order by one thread so that a slow containerd never
//! blocks a task request.

use std::sync::mpsc::{channel, Sender};

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Context;

pub struct Events {
    tx: Sender<(&'static str, Box<dyn MessageDyn>)>,
}

impl Events {
    pub fn new(publisher: RemotePublisher, namespace: String) -> Self {
        let (tx, rx) = channel::<(&'static str, Box<dyn MessageDyn>)>();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for (topic, event) in rx {
                    if let Err(e) = publisher.publish(Context::default(), topic, &namespace, event)
                    {
                        log::warn!("publishing {topic}: {e}");
                    }
                }
            })
            .expect("starting the events thread");
        Events { tx }
    }

    pub fn send(&self, topic: &'static str, event: impl MessageDyn + 'static) {
        let _ = self.tx.send((topic, Box::new(event)));
    }
}
