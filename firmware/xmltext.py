# The XML text rules the meter's XML, SOAP and WBXML encodings share: the error type,
# clean() and escape(). Apart from the tokenizer (xmlmini.py, which re-exports them) so a
# WBXML meter does not hold the tokenizer's code (docs/performance.md).


class XmlError(ValueError):
    pass


def clean(text):
    """XML 1.0 cannot carry control characters (not even as references): each but tab,
    newline and carriage return becomes U+FFFD."""
    for c in text:
        if c < " " and c not in "\t\n\r":
            return "".join("\ufffd" if (c < " " and c not in "\t\n\r") else c for c in text)
    return text


def escape(text, attr=False):
    """Text for element content or (attr) a double-quoted attribute, control characters
    cleaned. CR is a reference everywhere, and TAB and LF in attributes, since a parser
    normalises them (CR LF to LF, attribute whitespace to spaces)."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if '"' in text:
        text = text.replace('"', "&quot;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    if attr:
        if "\n" in text:
            text = text.replace("\n", "&#10;")
        if "\t" in text:
            text = text.replace("\t", "&#9;")
    return clean(text)
