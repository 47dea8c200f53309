//! A real nginx (Debian's `nginx-light`) on a free loopback port in front of several Hearth
//! processes, round-robin, as an operator would put it: WebSocket upgrades passed through,
//! long-polls given time, and a request retried on the next process when one is down.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

pub struct Nginx {
    pub base_url: String,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Proxies to `upstreams` (`http://127.0.0.1:port` each).
    pub fn start(upstreams: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("its address")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let servers: String = upstreams
            .iter()
            .map(|u| {
                format!("        server {} max_fails=1 fail_timeout=30s;\n", u.trim_start_matches("http://"))
            })
            .collect();
        let root = dir.path().display();
        // As root, nginx's workers would run as `nobody`, who cannot write this directory.
        let user = if is_root() { "user root;" } else { "" };
        let config = format!(
            "{user}
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    client_max_body_size 50m;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream hearth {{
{servers}        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://hearth;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 120s;
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout;
            proxy_buffering off;
        }}
    }}
}}
"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).expect("write nginx.conf");
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx must be installed (apt-get install nginx-light)");
        let nginx = Self { base_url: format!("http://127.0.0.1:{port}"), child: Some(child), _dir: dir };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return nginx;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("nginx did not listen on port {port}");
    }
}

fn nginx_bin() -> &'static str {
    if std::path::Path::new("/usr/sbin/nginx").exists() { "/usr/sbin/nginx" } else { "nginx" }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM, not SIGKILL: the master stops its workers, which SIGKILL would orphan.
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            for _ in 0..100 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
