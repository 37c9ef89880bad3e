//! Another mutating webhook, as a service mesh's injector: it adds a `proxy` container to every
//! Pod that lacks one. It listens on a loopback port with a certificate from a CA made for the test.

use std::sync::Arc;

use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use workload_identity_webhook::shell::certificates::ca::GeneratedCa;

/// The name of the container the injector adds.
pub const SIDECAR: &str = "proxy";

pub struct SidecarInjector {
    pub url: String,
    pub ca_pem: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for SidecarInjector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl SidecarInjector {
    pub async fn start() -> SidecarInjector {
        let ca = GeneratedCa::new("sidecar injector test CA").unwrap();
        let (cert, key) = ca.issue(&["127.0.0.1"]).unwrap();
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/mutate", listener.local_addr().unwrap());
        let router = Router::new().route("/mutate", post(answer));
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, router) = (acceptor.clone(), router.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router))
                            .await;
                    }
                });
            }
        });
        SidecarInjector {
            url,
            ca_pem: ca.cert_pem,
            server,
        }
    }

    /// The `clientConfig` of a webhook configuration that calls the injector.
    pub fn client_config(&self) -> Value {
        json!({"url": self.url, "caBundle": k8s_openapi::ByteString(self.ca_pem.as_bytes().to_vec())})
    }
}

/// Admits every object; a Pod without the sidecar gets it appended to its containers.
async fn answer(Json(review): Json<Value>) -> Json<Value> {
    let request = &review["request"];
    let containers = request["object"]["spec"]["containers"].as_array();
    let lacks_sidecar = request["kind"]["kind"] == "Pod"
        && containers.is_some_and(|containers| !containers.iter().any(|container| container["name"] == SIDECAR));
    let mut response = json!({"uid": request["uid"], "allowed": true});
    if lacks_sidecar {
        let patch = json!([{"op": "add", "path": "/spec/containers/-", "value": {"name": SIDECAR, "image": "registry.example/proxy:1"}}]);
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
    }
    Json(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}))
}
