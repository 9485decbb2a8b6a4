"""`proxy_url` (issue 12, 1 and 6): console-only, checked, and masked like a secret (it may
carry the proxy's password); firmware/http_proxy.py parses it the same on every interpreter."""

import config
import http_proxy as proxy
import pytest

pytestmark = pytest.mark.unit


def test_proxy_url_is_console_only_and_masked():
    assert config.refusal("proxy_url", "utility") == \
        "proxy_url can only be set at the serial console (bc.set)"
    cfg = config.validate({"proxy_url": "http://site:s3cret@10.0.0.8:3128"})
    assert config.public(cfg)["proxy_url"] == "(set)"


@pytest.mark.parametrize("url", ["https://proxy:3128", "http://proxy", "http://proxy:0",
                                 "http://proxy:99999", "http://proxy:3128/path", "proxy:3128",
                                 "http://:3128"])
def test_a_malformed_proxy_url_is_refused_with_the_form(url):
    with pytest.raises(config.ConfigError, match=r"http://\[user:password@\]host:port"):
        config.validate({"proxy_url": url})


def test_proxy_url_parts_and_connect_request():
    assert proxy.parse_proxy("http://10.0.0.8:3128") == ("10.0.0.8", 3128, None)
    host, port, auth = proxy.parse_proxy("http://site:s3:cret@proxy.example:8080/")
    assert (host, port, auth) == ("proxy.example", 8080, "c2l0ZTpzMzpjcmV0")
    assert proxy.connect_request("h.example", 443, auth) == (
        b"CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443\r\n"
        b"Proxy-Authorization: Basic c2l0ZTpzMzpjcmV0\r\n\r\n")
