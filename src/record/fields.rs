//! The field registry: every field a record can carry, spelled as AWS spells it, with the
//! flow-log version that introduced it (aws-spec §2.4). mirrorflow's enrichment fields
//! have no AWS version and do not raise the record's `version`.

use std::fmt;

macro_rules! fields {
    ($( $variant:ident => $name:literal, $version:expr; )*) => {
        /// One field of a flow-log record.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Field { $( $variant, )* }

        impl Field {
            pub const ALL: &'static [Field] = &[ $( Field::$variant, )* ];

            /// The field name as AWS (or, for enrichment, mirrorflow) spells it.
            pub fn name(self) -> &'static str {
                match self { $( Field::$variant => $name, )* }
            }

            /// True for fields that belong to the interface and window rather than a flow,
            /// the only ones a NODATA or SKIPDATA record fills in.
            pub fn describes_interface(self) -> bool {
                matches!(
                    self,
                    Field::Version | Field::AccountId | Field::InterfaceId | Field::Start | Field::End
                        | Field::LogStatus | Field::VpcId | Field::SubnetId | Field::InstanceId
                        | Field::Region | Field::AzId | Field::Vni | Field::MirrorSource
                )
            }

            /// The flow-log version that introduced the field; 0 for enrichment.
            pub fn version(self) -> u8 {
                match self { $( Field::$variant => $version, )* }
            }
        }
    };
}

fields! {
    Version => "version", 2;
    AccountId => "account-id", 2;
    InterfaceId => "interface-id", 2;
    Srcaddr => "srcaddr", 2;
    Dstaddr => "dstaddr", 2;
    Srcport => "srcport", 2;
    Dstport => "dstport", 2;
    Protocol => "protocol", 2;
    Packets => "packets", 2;
    Bytes => "bytes", 2;
    Start => "start", 2;
    End => "end", 2;
    Action => "action", 2;
    LogStatus => "log-status", 2;
    VpcId => "vpc-id", 3;
    SubnetId => "subnet-id", 3;
    InstanceId => "instance-id", 3;
    TcpFlags => "tcp-flags", 3;
    Type => "type", 3;
    PktSrcaddr => "pkt-srcaddr", 3;
    PktDstaddr => "pkt-dstaddr", 3;
    Region => "region", 4;
    AzId => "az-id", 4;
    SublocationType => "sublocation-type", 4;
    SublocationId => "sublocation-id", 4;
    PktSrcAwsService => "pkt-src-aws-service", 5;
    PktDstAwsService => "pkt-dst-aws-service", 5;
    FlowDirection => "flow-direction", 5;
    TrafficPath => "traffic-path", 5;
    Vni => "vni", 0;
    MirrorSource => "mirror-source", 0;
    ConnState => "conn-state", 0;
    TruncatedPackets => "truncated-packets", 0;
    AppProtocol => "app-protocol", 0;
    CommunityId => "community-id", 0;
    TlsSni => "tls-sni", 0;
    TlsVersion => "tls-version", 0;
    TlsAlpn => "tls-alpn", 0;
    TlsCipher => "tls-cipher", 0;
    TlsJa3 => "tls-ja3", 0;
    TlsJa3s => "tls-ja3s", 0;
    TlsJa4 => "tls-ja4", 0;
    TlsCertSubject => "tls-cert-subject", 0;
    TlsCertIssuer => "tls-cert-issuer", 0;
    TlsCertSan => "tls-cert-san", 0;
    HttpMethod => "http-method", 0;
    HttpHost => "http-host", 0;
    HttpUri => "http-uri", 0;
    HttpUserAgent => "http-user-agent", 0;
    HttpStatus => "http-status", 0;
    HttpContentType => "http-content-type", 0;
    HttpRequests => "http-requests", 0;
    DnsQuery => "dns-query", 0;
    DnsQueries => "dns-queries", 0;
    DnsQtype => "dns-qtype", 0;
    DnsRcode => "dns-rcode", 0;
    DnsAnswers => "dns-answers", 0;
    SshClient => "ssh-client", 0;
    SshServer => "ssh-server", 0;
    SshHassh => "ssh-hassh", 0;
    SshHasshServer => "ssh-hassh-server", 0;
    Findings => "findings", 0;
}

/// AWS's default format: the fourteen version-2 fields in order (aws-spec §2.3).
pub const DEFAULT_FORMAT: &[Field] = &[
    Field::Version,
    Field::AccountId,
    Field::InterfaceId,
    Field::Srcaddr,
    Field::Dstaddr,
    Field::Srcport,
    Field::Dstport,
    Field::Protocol,
    Field::Packets,
    Field::Bytes,
    Field::Start,
    Field::End,
    Field::Action,
    Field::LogStatus,
];

/// AWS fields of versions 7 to 11 that exist only with ECS, tags, route or encryption
/// metadata a mirror never carries. They are accepted in custom formats, so a user's
/// existing LogFormat string works, and always print `-` (AWS's "could not be computed").
pub const UNKNOWABLE_AWS_FIELDS: &[(&str, u8)] = &[
    ("ecs-cluster-arn", 7),
    ("ecs-cluster-name", 7),
    ("ecs-container-instance-arn", 7),
    ("ecs-container-instance-id", 7),
    ("ecs-container-id", 7),
    ("ecs-second-container-id", 7),
    ("ecs-service-name", 7),
    ("ecs-task-definition-arn", 7),
    ("ecs-task-arn", 7),
    ("ecs-task-id", 7),
    ("reject-reason", 8),
    ("resource-id", 9),
    ("encryption-status", 10),
    ("instance-tag", 11),
    ("instance-tag-2", 11),
    ("interface-tag", 11),
    ("interface-tag-2", 11),
    ("asg-tag", 11),
    ("asg-tag-2", 11),
    ("interface-type", 11),
    ("next-hop-interface-id", 11),
    ("next-hop-subnet-id", 11),
    ("next-hop-az-id", 11),
    ("next-hop-vpc-id", 11),
    ("next-hop-interface-type", 11),
];

/// A field in a custom format: one we compute, or an AWS field a mirror cannot know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatField {
    Known(Field),
    Unknowable { name: &'static str, version: u8 },
}

impl FormatField {
    pub fn lookup(name: &str) -> Option<FormatField> {
        if let Some(f) = Field::ALL.iter().find(|f| f.name() == name) {
            return Some(FormatField::Known(*f));
        }
        UNKNOWABLE_AWS_FIELDS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(name, version)| FormatField::Unknowable {
                name,
                version: *version,
            })
    }

    pub fn name(&self) -> &'static str {
        match self {
            FormatField::Known(f) => f.name(),
            FormatField::Unknowable { name, .. } => name,
        }
    }

    pub fn version(&self) -> u8 {
        match self {
            FormatField::Known(f) => f.version(),
            FormatField::Unknowable { version, .. } => *version,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
