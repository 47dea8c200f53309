//! core's mail seam (`hearth_core::push::mail::Mailer`) over lettre's SMTP transport: the only
//! place that speaks SMTP.

use anyhow::Context;
use hearth_core::{
    config::{EmailConfig, SmtpTls},
    ephemeral::BoxFuture,
    push::mail::{Mail, MailError, Mailer},
};
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
};

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpMailer {
    /// The mailer `[email]` describes, or `None` when it names no SMTP server.
    pub fn from_config(config: &EmailConfig) -> anyhow::Result<Option<Self>> {
        let Some(host) = &config.smtp_host else { return Ok(None) };
        let params = || -> anyhow::Result<TlsParameters> {
            let mut params = TlsParameters::builder(host.clone());
            if let Some(path) = &config.ca_file {
                let pem = std::fs::read(path).with_context(|| format!("email.ca_file {}", path.display()))?;
                let cert = Certificate::from_pem(&pem)
                    .with_context(|| format!("email.ca_file {}", path.display()))?;
                params = params.add_root_certificate(cert);
            }
            params.build_rustls().with_context(|| format!("email.smtp_host {host:?}"))
        };
        let tls = match config.tls {
            SmtpTls::Starttls => Tls::Required(params()?),
            SmtpTls::Tls => Tls::Wrapper(params()?),
            SmtpTls::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(config.smtp_port)
            .tls(tls)
            .timeout(Some(std::time::Duration::from_secs(30)));
        if let (Some(user), Some(password)) = (&config.smtp_user, &config.smtp_password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let from = config.from.parse().with_context(|| format!("email.from {:?}", config.from))?;
        Ok(Some(Self { transport: builder.build(), from }))
    }

    async fn deliver(&self, mail: Mail) -> Result<(), MailError> {
        let permanent = |message: String| MailError { message, transient: false };
        let to: Mailbox = mail.to.parse().map_err(|e| permanent(format!("bad address: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject)
            .header(ListUnsubscribe(format!("<{}>", mail.unsubscribe_url)))
            .multipart(MultiPart::alternative_plain_html(mail.text, mail.html))
            .map_err(|e| permanent(format!("building the mail: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(error) => Err(MailError { transient: !error.is_permanent(), message: error.to_string() }),
        }
    }
}

impl Mailer for SmtpMailer {
    fn send(&self, mail: Mail) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(self.deliver(mail))
    }
}

/// `List-Unsubscribe` (RFC 2369), so that mail programs offer the unsubscribe link.
#[derive(Debug, Clone)]
struct ListUnsubscribe(String);

impl lettre::message::header::Header for ListUnsubscribe {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), self.0.clone())
    }
}
