//! The Task and Sandbox services as the async ttrpc server calls them.
//!
//! containerd opens a connection per container and per pod, and the threaded ttrpc server
//! gave each a reader, a writer and idle workers: about 12,000 threads in the one shim that
//! serves a node's thousand pods. Here a connection is a task. The services stay synchronous
//! (they fork, wait on pipes, take locks), so each call runs on tokio's blocking pool, except
//! the waits containerd keeps open for each container and pod (Wait, WaitSandbox): those
//! await a change of state and hold no thread.

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::protos::ttrpc::{self, r#async::TtrpcContext as AsyncContext};
use containerd_shim::TtrpcContext;
use containerd_shim_protos::sandbox_api;

use crate::sandbox::SandboxService;
use crate::task::TaskService;

/// The context the synchronous services' methods take (they read none of it).
fn sync_context(ctx: &AsyncContext) -> TtrpcContext {
    TtrpcContext {
        fd: ctx.fd,
        cancel_rx: crossbeam_channel::never(),
        mh: ctx.mh,
        res_tx: std::sync::mpsc::channel().0,
        metadata: ctx.metadata.clone(),
        timeout_nano: ctx.timeout_nano,
    }
}

/// Run one synchronous call on the blocking pool.
async fn blocking<S, R>(
    service: &Arc<S>,
    ctx: &AsyncContext,
    call: impl FnOnce(&S, &TtrpcContext) -> ttrpc::Result<R> + Send + 'static,
) -> ttrpc::Result<R>
where
    S: Send + Sync + 'static,
    R: Send + 'static,
{
    let (service, ctx) = (service.clone(), sync_context(ctx));
    tokio::task::spawn_blocking(move || call(&service, &ctx))
        .await
        .map_err(|e| ttrpc::Error::Others(format!("the shim's handler failed: {e}")))?
}

/// `impl $async_trait for $adapter`, each listed method run by the synchronous service's
/// method of the same name on the blocking pool; `$extra` are written out.
macro_rules! on_blocking_pool {
    ($async_trait:path, $adapter:ty, $sync_trait:path,
     [$($method:ident($req:ty) -> $resp:ty),* $(,)?], { $($extra:item)* }) => {
        #[async_trait]
        impl $async_trait for $adapter {
            $(
                async fn $method(&self, ctx: &AsyncContext, req: $req) -> ttrpc::Result<$resp> {
                    blocking(&self.0, ctx, move |s, c| <_ as $sync_trait>::$method(s, c, req)).await
                }
            )*
            $($extra)*
        }
    };
}

pub struct AsyncTasks(pub Arc<TaskService>);

on_blocking_pool!(
    containerd_shim_protos::shim_async::Task,
    AsyncTasks,
    containerd_shim::Task,
    [
        state(api::StateRequest) -> api::StateResponse,
        create(api::CreateTaskRequest) -> api::CreateTaskResponse,
        start(api::StartRequest) -> api::StartResponse,
        delete(api::DeleteRequest) -> api::DeleteResponse,
        pids(api::PidsRequest) -> api::PidsResponse,
        pause(api::PauseRequest) -> api::Empty,
        resume(api::ResumeRequest) -> api::Empty,
        checkpoint(api::CheckpointTaskRequest) -> api::Empty,
        kill(api::KillRequest) -> api::Empty,
        exec(api::ExecProcessRequest) -> api::Empty,
        resize_pty(api::ResizePtyRequest) -> api::Empty,
        close_io(api::CloseIORequest) -> api::Empty,
        update(api::UpdateTaskRequest) -> api::Empty,
        stats(api::StatsRequest) -> api::StatsResponse,
        connect(api::ConnectRequest) -> api::ConnectResponse,
        shutdown(api::ShutdownRequest) -> api::Empty,
    ],
    {
        async fn wait(
            &self,
            _ctx: &AsyncContext,
            req: api::WaitRequest,
        ) -> ttrpc::Result<api::WaitResponse> {
            self.0.changed().until(|| self.0.try_wait(&req).transpose()).await
        }
    }
);

pub struct AsyncSandboxes(pub Arc<SandboxService>);

on_blocking_pool!(
    containerd_shim_protos::sandbox_async::Sandbox,
    AsyncSandboxes,
    containerd_shim_protos::sandbox_sync::Sandbox,
    [
        create_sandbox(sandbox_api::CreateSandboxRequest) -> sandbox_api::CreateSandboxResponse,
        start_sandbox(sandbox_api::StartSandboxRequest) -> sandbox_api::StartSandboxResponse,
        platform(sandbox_api::PlatformRequest) -> sandbox_api::PlatformResponse,
        stop_sandbox(sandbox_api::StopSandboxRequest) -> sandbox_api::StopSandboxResponse,
        sandbox_status(sandbox_api::SandboxStatusRequest) -> sandbox_api::SandboxStatusResponse,
        ping_sandbox(sandbox_api::PingRequest) -> sandbox_api::PingResponse,
        shutdown_sandbox(sandbox_api::ShutdownSandboxRequest) -> sandbox_api::ShutdownSandboxResponse,
    ],
    {
        async fn wait_sandbox(
            &self,
            _ctx: &AsyncContext,
            req: sandbox_api::WaitSandboxRequest,
        ) -> ttrpc::Result<sandbox_api::WaitSandboxResponse> {
            let id = &req.sandbox_id;
            self.0.ensure_held(id)?;
            let pods = self.0.pods();
            let exit = pods.changed().until(|| pods.exit(id)).await;
            Ok(crate::sandbox::wait_answer(exit))
        }
    }
);
