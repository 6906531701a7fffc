//! Starting and stopping the simulator.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use tokio_util::sync::CancellationToken;

use crate::config::SimConfig;
use crate::control::Control;
use crate::error::SimError;
use crate::routes;
use crate::state::Sim;

/// A running simulator. Dropping it stops it too, without waiting.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    control: Control,
    sim: Arc<Sim>,
    server: ServerHandle,
    cancel: CancellationToken,
}

/// Binds `config.bind` (port 0: any free port), starts the HTTP server and the
/// webhook dispatcher on the current tokio runtime, and returns at once.
pub async fn spawn(config: SimConfig) -> Result<SimHandle, SimError> {
    let listener = TcpListener::bind(config.bind).map_err(SimError::Bind)?;
    let addr = listener.local_addr().map_err(SimError::Bind)?;
    let workers = config.workers.max(1);
    let sim = Sim::new(config)?;
    let data = web::Data::from(Arc::clone(&sim));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
    })
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)
    .map_err(SimError::Bind)?
    .run();
    let server_handle = server.handle();
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "simulator HTTP server failed");
        }
    });
    let cancel = CancellationToken::new();
    tokio::spawn(Arc::clone(&sim.delivery).run(cancel.clone()));
    tracing::info!(%addr, "HubSpot simulator listening");
    Ok(SimHandle {
        addr,
        control: Control::new(Arc::clone(&sim)),
        sim,
        server: server_handle,
        cancel,
    })
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`: the base URL to give a HubSpot client
    /// (in place of `https://api.hubapi.com`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The in-process control API.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// The configuration it was started with (app credentials, portals, …).
    pub fn config(&self) -> &SimConfig {
        &self.sim.config
    }

    /// Stops accepting requests, finishes those in progress and stops delivery.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.server.stop(true).await;
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let server = self.server.clone();
            rt.spawn(async move { server.stop(false).await });
        }
    }
}
