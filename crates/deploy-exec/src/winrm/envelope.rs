//! WS-Management SOAP envelopes for the Windows remote shell: built with quick-xml's writer, parsed with its reader.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesStart, BytesText, Event};

const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
const NS_ADDRESSING: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
const NS_WSMAN: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd";
const NS_SHELL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
const ANONYMOUS: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous";
/// The resource URI of the cmd shell (`winrs`).
pub const RESOURCE_CMD: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd";
/// The CommandState of a finished command.
pub const STATE_DONE: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done";
const SIGNAL_TERMINATE: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate";

/// The WS-Management operations the executor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Command,
    Receive,
    Signal,
    Delete,
}

impl Action {
    /// The `a:Action` URI.
    pub fn uri(self) -> &'static str {
        match self {
            Self::Create => "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
            Self::Delete => "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete",
            Self::Command => "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command",
            Self::Receive => "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive",
            Self::Signal => "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal",
        }
    }

    /// The short name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create shell",
            Self::Command => "start command",
            Self::Receive => "receive output",
            Self::Signal => "signal terminate",
            Self::Delete => "delete shell",
        }
    }
}

/// The header values every request carries.
#[derive(Debug, Clone)]
pub struct Header<'a> {
    pub to: &'a str,
    pub message_id: &'a str,
    pub max_envelope_size: usize,
    pub operation_timeout: Duration,
    pub shell_id: Option<&'a str>,
}

/// What one request asks for.
#[derive(Debug, Clone)]
pub enum Request<'a> {
    /// Create a cmd shell with stdin and stdout/stderr streams.
    Create,
    /// Run `command` (with `arguments`) in the shell.
    Command {
        command: &'a str,
        arguments: &'a [String],
    },
    /// Fetch the output of `command_id`.
    Receive { command_id: &'a str },
    /// Terminate `command_id`.
    Signal { command_id: &'a str },
    /// Delete the shell.
    Delete,
}

impl Request<'_> {
    /// The action this request performs.
    pub fn action(&self) -> Action {
        match self {
            Self::Create => Action::Create,
            Self::Command { .. } => Action::Command,
            Self::Receive { .. } => Action::Receive,
            Self::Signal { .. } => Action::Signal,
            Self::Delete => Action::Delete,
        }
    }
}

/// `PT<seconds>.<millis>S`, the xs:duration WS-Management expects.
pub fn iso_duration(d: Duration) -> String {
    format!("PT{}.{:03}S", d.as_secs(), d.subsec_millis())
}

type W = Writer<Vec<u8>>;
type Io = std::io::Result<()>;

fn text(w: &mut W, name: &str, attrs: &[(&str, &str)], value: &str) -> Io {
    let mut el = w.create_element(name);
    for (k, v) in attrs {
        el = el.with_attribute((*k, *v));
    }
    el.write_text_content(BytesText::new(value))?;
    Ok(())
}

fn header(w: &mut W, h: &Header<'_>, req: &Request<'_>) -> Io {
    let must = ("s:mustUnderstand", "true");
    text(w, "a:To", &[], h.to)?;
    w.create_element("a:ReplyTo").write_inner_content(|w| {
        text(w, "a:Address", &[must], ANONYMOUS)?;
        Ok(())
    })?;
    text(
        w,
        "w:MaxEnvelopeSize",
        &[must],
        &h.max_envelope_size.to_string(),
    )?;
    text(w, "a:MessageID", &[], h.message_id)?;
    w.create_element("w:Locale")
        .with_attributes([("s:mustUnderstand", "false"), ("xml:lang", "en-US")])
        .write_empty()?;
    text(
        w,
        "w:OperationTimeout",
        &[],
        &iso_duration(h.operation_timeout),
    )?;
    text(w, "w:ResourceURI", &[must], RESOURCE_CMD)?;
    text(w, "a:Action", &[must], req.action().uri())?;
    if let Some(shell) = h.shell_id {
        w.create_element("w:SelectorSet").write_inner_content(|w| {
            text(w, "w:Selector", &[("Name", "ShellId")], shell)?;
            Ok(())
        })?;
    }
    match req {
        Request::Create => {
            w.create_element("w:OptionSet").write_inner_content(|w| {
                text(w, "w:Option", &[("Name", "WINRS_NOPROFILE")], "TRUE")?;
                text(w, "w:Option", &[("Name", "WINRS_CODEPAGE")], "65001")?;
                Ok(())
            })?;
        }
        Request::Command { .. } => {
            w.create_element("w:OptionSet").write_inner_content(|w| {
                text(
                    w,
                    "w:Option",
                    &[("Name", "WINRS_CONSOLEMODE_STDIN")],
                    "TRUE",
                )?;
                text(w, "w:Option", &[("Name", "WINRS_SKIP_CMD_SHELL")], "FALSE")?;
                Ok(())
            })?;
        }
        Request::Receive { .. } | Request::Signal { .. } | Request::Delete => {}
    }
    Ok(())
}

fn body(w: &mut W, req: &Request<'_>) -> Io {
    match req {
        Request::Create => {
            w.create_element("rsp:Shell").write_inner_content(|w| {
                text(w, "rsp:InputStreams", &[], "stdin")?;
                text(w, "rsp:OutputStreams", &[], "stdout stderr")?;
                Ok(())
            })?;
        }
        Request::Command { command, arguments } => {
            w.create_element("rsp:CommandLine")
                .write_inner_content(|w| {
                    text(w, "rsp:Command", &[], command)?;
                    for a in *arguments {
                        text(w, "rsp:Arguments", &[], a)?;
                    }
                    Ok(())
                })?;
        }
        Request::Receive { command_id } => {
            w.create_element("rsp:Receive").write_inner_content(|w| {
                text(
                    w,
                    "rsp:DesiredStream",
                    &[("CommandId", command_id)],
                    "stdout stderr",
                )?;
                Ok(())
            })?;
        }
        Request::Signal { command_id } => {
            w.create_element("rsp:Signal")
                .with_attribute(("CommandId", *command_id))
                .write_inner_content(|w| {
                    text(w, "rsp:Code", &[], SIGNAL_TERMINATE)?;
                    Ok(())
                })?;
        }
        Request::Delete => {}
    }
    Ok(())
}

/// The request envelope, UTF-8 encoded.
pub fn build(h: &Header<'_>, req: &Request<'_>) -> Vec<u8> {
    let mut w = Writer::new(Vec::with_capacity(2048));
    // Writing into a Vec cannot fail; an io error here would be a bug in the writer.
    let written: Io = (|| {
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)))?;
        let envelope = BytesStart::new("s:Envelope").with_attributes([
            ("xmlns:s", NS_SOAP),
            ("xmlns:a", NS_ADDRESSING),
            ("xmlns:w", NS_WSMAN),
            ("xmlns:rsp", NS_SHELL),
        ]);
        w.write_event(Event::Start(envelope.borrow()))?;
        w.create_element("s:Header")
            .write_inner_content(|w| header(w, h, req))?;
        w.create_element("s:Body")
            .write_inner_content(|w| body(w, req))?;
        w.write_event(Event::End(envelope.to_end()))?;
        Ok(())
    })();
    debug_assert!(written.is_ok(), "writing xml into a Vec failed");
    w.into_inner()
}

/// One chunk of a command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChunk {
    /// `stdout` or `stderr`.
    pub name: String,
    pub data: Vec<u8>,
}

/// A SOAP fault.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fault {
    /// `s:Code/s:Value` then `s:Subcode/s:Value`, e.g. `s:Receiver`, `w:TimedOut`.
    pub codes: Vec<String>,
    /// `s:Reason/s:Text`.
    pub reason: String,
    /// `WSManFault@Code`, e.g. `2150858793`.
    pub wsman_code: Option<String>,
    /// `WSManFault/Message`.
    pub message: String,
}

impl Fault {
    /// True for the fault a Receive answers with when no output arrived within OperationTimeout.
    pub fn is_operation_timeout(&self) -> bool {
        self.codes
            .iter()
            .any(|c| c.ends_with(":TimedOut") || c == "TimedOut")
            || self.wsman_code.as_deref() == Some("2150858793")
    }

    /// A one-line summary for error messages.
    pub fn summary(&self) -> String {
        let mut s = self.codes.join(" / ");
        if let Some(code) = &self.wsman_code {
            s.push_str(&format!(" (wsman code {code})"));
        }
        let text = if self.message.trim().is_empty() {
            self.reason.trim()
        } else {
            self.message.trim()
        };
        if !text.is_empty() {
            s.push_str(": ");
            s.push_str(text);
        }
        s
    }
}

/// Everything the client reads out of a response envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// `a:RelatesTo`: the MessageID of the request this answers.
    pub relates_to: Option<String>,
    pub shell_id: Option<String>,
    pub command_id: Option<String>,
    pub streams: Vec<StreamChunk>,
    /// The CommandState@State URI, when present.
    pub command_state: Option<String>,
    pub exit_code: Option<i64>,
    pub fault: Option<Fault>,
}

impl Response {
    /// True when the command has finished.
    pub fn done(&self) -> bool {
        self.command_state.as_deref() == Some(STATE_DONE)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    None,
    RelatesTo,
    ShellId,
    CommandId,
    Stream,
    ExitCode,
    FaultValue,
    FaultText,
    FaultMessage,
}

fn local(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, l)| l)
}

fn attr(e: &BytesStart<'_>, key: &str) -> Result<Option<String>, String> {
    for a in e.attributes() {
        let a = a.map_err(|err| format!("bad attribute: {err}"))?;
        if local(a.key.as_ref()) == key {
            let v = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|err| format!("bad attribute value: {err}"))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

struct Parser {
    out: Response,
    capture: Capture,
    buf: String,
    stream_name: String,
    saw_envelope: bool,
    saw_body: bool,
}

impl Parser {
    fn start(&mut self, e: &BytesStart<'_>) -> Result<(), String> {
        let name = e.name();
        let l = local(name.as_ref());
        if !self.saw_envelope {
            if l != "Envelope" {
                return Err(format!(
                    "expected a soap Envelope, found <{}>",
                    name.as_ref()
                ));
            }
            self.saw_envelope = true;
        }
        if l == "Body" {
            self.saw_body = true;
        }
        let in_fault = self.out.fault.is_some();
        self.capture = match l {
            "Selector" if attr(e, "Name")?.as_deref() == Some("ShellId") => Capture::ShellId,
            // A CreateResponse may also carry rsp:ShellId inside rsp:Shell.
            "ShellId" => Capture::ShellId,
            "RelatesTo" => Capture::RelatesTo,
            "CommandId" => Capture::CommandId,
            "Stream" => {
                self.stream_name = attr(e, "Name")?.unwrap_or_default();
                Capture::Stream
            }
            "CommandState" => {
                self.out.command_state = attr(e, "State")?;
                Capture::None
            }
            "ExitCode" => Capture::ExitCode,
            "Fault" => {
                self.out.fault.get_or_insert_with(Fault::default);
                Capture::None
            }
            "Value" if in_fault => Capture::FaultValue,
            "Text" if in_fault => Capture::FaultText,
            "WSManFault" => {
                let code = attr(e, "Code")?;
                if let Some(f) = self.out.fault.as_mut() {
                    f.wsman_code = code;
                }
                Capture::None
            }
            "Message" if in_fault => Capture::FaultMessage,
            _ => Capture::None,
        };
        self.buf.clear();
        Ok(())
    }

    fn end(&mut self) -> Result<(), String> {
        finish(&mut self.out, self.capture, &self.buf, &self.stream_name)?;
        self.capture = Capture::None;
        self.buf.clear();
        Ok(())
    }
}

/// Parses a response envelope. The error is a short description of what is wrong.
pub fn parse(xml: &[u8]) -> Result<Response, String> {
    let text_in = std::str::from_utf8(xml).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut reader = quick_xml::Reader::from_str(text_in);
    let mut p = Parser {
        out: Response::default(),
        capture: Capture::None,
        buf: String::new(),
        stream_name: String::new(),
        saw_envelope: false,
        saw_body: false,
    };
    let mut depth: usize = 0;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("malformed xml at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(e) => {
                if depth == 0 && p.saw_envelope {
                    return Err("content after the envelope".to_owned());
                }
                p.start(&e)?;
                depth = depth.saturating_add(1);
            }
            Event::Empty(e) => {
                if depth == 0 {
                    return Err("the envelope is empty".to_owned());
                }
                p.start(&e)?;
                p.end()?;
            }
            Event::Text(t) => {
                if p.capture != Capture::None {
                    p.buf.push_str(&t.xml10_content());
                } else if depth == 0 && !t.xml10_content().trim().is_empty() {
                    return Err("text outside the envelope".to_owned());
                }
            }
            Event::CData(t) => {
                if p.capture != Capture::None {
                    p.buf.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if p.capture != Capture::None {
                    let raw = format!("&{};", r.xml10_content());
                    let v = quick_xml::escape::unescape(&raw)
                        .map_err(|e| format!("bad entity reference {raw}: {e}"))?;
                    p.buf.push_str(&v);
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                p.end()?;
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) | Event::Comment(_) => {}
        }
    }
    if !p.saw_envelope {
        return Err("expected a soap Envelope, found no element".to_owned());
    }
    if depth != 0 {
        return Err("the envelope ends before its elements are closed".to_owned());
    }
    if !p.saw_body {
        return Err("the envelope has no Body".to_owned());
    }
    Ok(p.out)
}

fn finish(out: &mut Response, capture: Capture, buf: &str, stream: &str) -> Result<(), String> {
    let v = buf.trim();
    match capture {
        Capture::None => {}
        Capture::RelatesTo => out.relates_to = Some(v.to_owned()),
        Capture::ShellId => out.shell_id = Some(v.to_owned()),
        Capture::CommandId => out.command_id = Some(v.to_owned()),
        Capture::Stream => {
            if !v.is_empty() {
                let data = BASE64
                    .decode(v)
                    .map_err(|e| format!("stream `{stream}` is not base64: {e}"))?;
                out.streams.push(StreamChunk {
                    name: stream.to_owned(),
                    data,
                });
            }
        }
        Capture::ExitCode => {
            out.exit_code = Some(
                v.parse()
                    .map_err(|_| format!("ExitCode `{}` is not an integer", v.escape_debug()))?,
            );
        }
        Capture::FaultValue => {
            if let Some(f) = out.fault.as_mut() {
                f.codes.push(v.to_owned());
            }
        }
        Capture::FaultText => {
            if let Some(f) = out.fault.as_mut() {
                f.reason = v.to_owned();
            }
        }
        Capture::FaultMessage => {
            if let Some(f) = out.fault.as_mut() {
                f.message = v.to_owned();
            }
        }
    }
    Ok(())
}
