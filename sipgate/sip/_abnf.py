"""RFC 3261 §25.1 grammar, as regular expressions compiled once at import."""

from __future__ import annotations

import re

# Every class below is spelled out in ASCII: in a str pattern \d, \w and \s
# also match non-ASCII digits, letters and spaces, which SIP does not allow.

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"

# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
# quoted-pair   = "\" (%x00-09 / %x0B-0C / %x0E-7F)
QUOTED_STRING = r'"(?:[^"\\]|\\.)*"'

# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT   (case-insensitive, §7.1)
SIP_VERSION = r"[Ss][Ii][Pp]/[0-9]+\.[0-9]+"

# Request-Line = Method SP Request-URI SP SIP-Version CRLF
# Method       = INVITEm / ACKm / ... / extension-method ; extension-method = token
# (runs of SP are tolerated between the three elements; the version is
# checked separately so that "SIP/3.0" can be answered 505, not 400)
REQUEST_LINE = re.compile(rf"({TOKEN})[ ]+([^ \t]+)[ ]+([^ \t]+)[ \t]*")

# Status-Line   = SIP-Version SP Status-Code SP Reason-Phrase CRLF
# Status-Code   = 3DIGIT
# Reason-Phrase = *(reserved / unreserved / escaped / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
# (an empty phrase with or without its SP is tolerated)
STATUS_LINE = re.compile(r"([^ \t]+)[ ]+([0-9]{3})(?:[ \t]+(.*))?")
VERSION = re.compile(SIP_VERSION)

# CSeq = "CSeq" HCOLON 1*DIGIT LWS Method      (§8.1.1.5: the number < 2**31)
CSEQ = re.compile(rf"([0-9]{{1,10}})[ \t]+({TOKEN})")

# header-name = token   (§7.3.1; whitespace before the colon is allowed)
HEADER_NAME = re.compile(TOKEN)
PARAM_NAME = re.compile(TOKEN)

# host          = hostname / IPv4address / IPv6reference
# hostname      = *( domainlabel "." ) toplabel [ "." ]
# domainlabel   = alphanum / alphanum *( alphanum / "-" ) alphanum
# IPv6reference = "[" IPv6address "]"
# (labels are checked by character class only, and "_" is tolerated as
# deployed software uses it; an IPv6 literal is validated separately)
HOST = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*\.?"

# via-parm      = sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol = protocol-name SLASH protocol-version SLASH transport
# sent-by       = host [ COLON port ]
# SLASH = SWS "/" SWS ; COLON = SWS ":" SWS
VIA = re.compile(
    rf"({TOKEN})[ \t]*/[ \t]*({TOKEN})[ \t]*/[ \t]*({TOKEN})[ \t]+"
    rf"({HOST})(?:[ \t]*:[ \t]*([0-9]{{1,5}}))?[ \t]*"
)

# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")

# unreserved      = alphanum / mark
# mark            = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
# escaped         = "%" HEXDIG HEXDIG
# user            = 1*( unreserved / escaped / user-unreserved )
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
# password        = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_ESCAPED = r"%[0-9A-Fa-f]{2}"
USER = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESCAPED})+")
PASSWORD = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*")

# SIP-URI        = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
# hostport       = host [ ":" port ]
# uri-parameters = *( ";" uri-parameter )
# other-param    = pname [ "=" pvalue ]
# pname / pvalue = 1*paramchar
# paramchar      = param-unreserved / unreserved / escaped
# param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"
# headers        = "?" header *( "&" header )
# header         = hname "=" hvalue
# hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"
# (an empty pvalue, "x=", is tolerated)
_PARAMCHAR = rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESCAPED})"
_HNVCHAR = rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESCAPED})"
HOSTPART = re.compile(
    rf"({HOST})(?::([0-9]{{1,5}}))?"
    rf"((?:;{_PARAMCHAR}+(?:={_PARAMCHAR}*)?)*)"
    rf"(?:\?({_HNVCHAR}+={_HNVCHAR}*(?:&{_HNVCHAR}+={_HNVCHAR}*)*))?"
)

QUOTED = re.compile(QUOTED_STRING)
QUOTED_PAIR = re.compile(r"\\(.)")

# Splits "a;b="x;y";c" on the semicolons outside quoted strings.
PARAM_SPLIT = re.compile(rf';((?:[^;"]|{QUOTED_STRING})*)')
