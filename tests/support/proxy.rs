//! A forward HTTP proxy on loopback, as the on-prem proxies cattery goes through: `CONNECT
//! host:port` tunnels (https targets) and absolute-form requests (`GET http://host:port/path`,
//! plain-http targets), like Squid. It resolves target names itself through its own table (so a
//! name that does not resolve on this machine is reachable only through it), and records what
//! it was asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// One request the proxy received: the target it was asked for and its proxy credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// `CONNECT` or the method of an absolute-form request.
    pub method: String,
    /// `host:port` of the target.
    pub target: String,
    /// The `Proxy-Authorization` header, if any.
    pub authorization: Option<String>,
}

/// The proxy; stops when dropped.
pub struct ForwardProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    asked: Arc<Mutex<Vec<Asked>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ForwardProxy {
    /// Starts it on a free loopback port; `names` maps the host names it resolves (anything
    /// else must be an IP address).
    pub async fn start(names: &[(&str, &str)]) -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let names: Arc<HashMap<String, String>> = Arc::new(
            names
                .iter()
                .map(|(name, ip)| ((*name).to_owned(), (*ip).to_owned()))
                .collect(),
        );
        let asked: Arc<Mutex<Vec<Asked>>> = Arc::default();
        let record = asked.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (names, record) = (names.clone(), record.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &names, &record).await;
                });
            }
        });
        ForwardProxy { url, asked, task }
    }

    /// Every request so far, in order.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

async fn serve(
    mut client: TcpStream,
    names: &HashMap<String, String>,
    record: &Mutex<Vec<Asked>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, uri, version) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or("HTTP/1.1").to_owned(),
    );
    let headers: Vec<&str> = lines.filter(|line| !line.is_empty()).collect();
    let authorization = headers.iter().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });
    let (target, origin_form) = if method == "CONNECT" {
        (uri.clone(), None)
    } else {
        let Ok(url) = url::Url::parse(&uri) else {
            client
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await?;
            return Ok(());
        };
        let target = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(80)
        );
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        (target, Some(path))
    };
    record.lock().unwrap().push(Asked {
        method: method.clone(),
        target: target.clone(),
        authorization,
    });
    let (host, port) = target.rsplit_once(':').unwrap_or((&target, "80"));
    let ip = names.get(host).map_or(host, String::as_str);
    let Ok(mut upstream) = TcpStream::connect(format!("{ip}:{port}")).await else {
        client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    match origin_form {
        None => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?;
        }
        Some(path) => {
            // The first request in origin form; later ones on this connection go to the same
            // target in absolute form, which HTTP/1.1 servers accept.
            let mut forwarded = format!("{method} {path} {version}\r\n");
            for line in &headers {
                let name = line.split(':').next().unwrap_or_default();
                if !name.to_ascii_lowercase().starts_with("proxy-") {
                    forwarded.push_str(line);
                    forwarded.push_str("\r\n");
                }
            }
            forwarded.push_str("\r\n");
            upstream.write_all(forwarded.as_bytes()).await?;
        }
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
