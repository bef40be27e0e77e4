# faceseal service image: `faceseal serve` with the dlib encoder, PostgreSQL, OpenBao/Vault
# transit and the numba scan. Build: docker build -t faceseal:local .
# See docs/deployment.md (compose.yaml runs it beside PostgreSQL and OpenBao).
FROM python:3.11-slim-bookworm

# Wheels only (dlib-bin, numba, psycopg[binary]): nothing is compiled in the image.
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PREFER_BINARY=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

WORKDIR /opt/faceseal-src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install '.[faces,postgres,server,vault,fast,redis]' && rm -rf /opt/faceseal-src

# An unprivileged user; the vault directory is the only place it writes. Keys live in the
# key provider (OpenBao transit in compose.yaml), never in the image or the vault volume.
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/faceseal faceseal \
    && install -d -o faceseal -g faceseal -m 0700 /var/lib/faceseal-keys
COPY --chmod=0755 docker/faceseal-entrypoint.sh /usr/local/bin/faceseal-entrypoint
USER faceseal
WORKDIR /var/lib/faceseal
ENV FACESEAL_HOME=/var/lib/faceseal/vault FACESEAL_KEYRING_DIR=/var/lib/faceseal-keys

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
ENTRYPOINT ["faceseal-entrypoint"]
CMD ["faceseal", "serve", "--host", "0.0.0.0", "--port", "8000"]
