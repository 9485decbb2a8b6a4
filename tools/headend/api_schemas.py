"""The XML form's schema and the SOAP binding's WSDL, served for integration buses and SOAP
clients (docs/protocol.md "Encodings"): GET /schemas/exchange.xsd and
/schemas/exchange.wsdl, no token needed. The WSDL names this head-end's own exchange URL
as the service address."""

from pathlib import Path

from fastapi import APIRouter, Request, Response

router = APIRouter(tags=["schemas"])
FOLDER = Path(__file__).resolve().parent / "schemas"
XSD = FOLDER / "exchange.xsd"
WSDL = FOLDER / "exchange.wsdl"


@router.get("/schemas/exchange.xsd", summary="XSD of the exchange's XML encoding")
def exchange_xsd():
    return Response(XSD.read_bytes(), media_type="application/xml")


@router.get("/schemas/exchange.wsdl", summary="WSDL of the exchange's SOAP 1.2 binding")
def exchange_wsdl(request: Request):
    location = str(request.url_for("exchange"))
    text = WSDL.read_text().replace("@LOCATION@", location.replace("&", "&amp;"))
    return Response(text.encode(), media_type="application/xml")
