"""A throwaway certificate authority and server certificate for the simulator's HTTPS.

Why TLS on loopback: azure-core's bearer-token policy refuses plain ``http://`` URLs, so the
unmodified SDK can only talk to the simulator over HTTPS. A fresh CA per simulator (trustme)
means nothing has to be installed system-wide: clients get ``connection_verify=<ca.pem>``.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass

import trustme


@dataclass(frozen=True)
class ServerTls:
    """What a running simulator needs: the server context and the CA file clients must trust."""

    context: ssl.SSLContext
    ca_file: str
    owned_dir: str | None  # a temporary directory to remove on stop, if we created one

    def cleanup(self) -> None:
        if self.owned_dir:
            shutil.rmtree(self.owned_dir, ignore_errors=True)


def make_server_tls(host: str, *, ca_file: str | None = None) -> ServerTls:
    """Create a CA, a leaf certificate for ``host`` (plus 127.0.0.1 and localhost), and write the CA PEM.

    ``ca_file`` chooses where the CA certificate is written (the CLI lets users pick a stable
    path for their operator config); by default it goes to a private temporary directory.
    """
    names = ["127.0.0.1", "localhost"]
    if host not in names and host not in ("0.0.0.0", "::", ""):
        names.append(host)
    ca = trustme.CA(organization_name="gpuvm-operator Azure simulator")
    leaf = ca.issue_cert(*names)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    owned_dir = None
    if ca_file is None:
        owned_dir = tempfile.mkdtemp(prefix="azuresim-")
        ca_file = os.path.join(owned_dir, "ca.pem")
    else:
        os.makedirs(os.path.dirname(os.path.abspath(ca_file)), exist_ok=True)
    ca.cert_pem.write_to_path(ca_file)
    return ServerTls(context=context, ca_file=ca_file, owned_dir=owned_dir)

