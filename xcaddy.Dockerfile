# Builds Caddy with Gatehouse, the way ops deploy it:
#
#   docker build -f xcaddy.Dockerfile -t gatehouse .
#   docker run -p 443:443 -v $PWD/Caddyfile:/etc/caddy/Caddyfile \
#     -v gatehouse-policies:/etc/gatehouse/policies -v gatehouse-state:/var/lib/gatehouse gatehouse
#
# The Caddy version here must be go.mod's; e2e/xcaddy_test.go runs this
# file's xcaddy build command and checks both.

# "@v0.0.0" pins the module to the copied source: without a version, xcaddy
# asks the Go module proxy for the latest release of a module that is only
# here.
FROM caddy:2.11.9-builder AS builder
COPY . /src
RUN xcaddy build v2.11.9 --with github.com/gatehouse-proxy/gatehouse@v0.0.0=/src

FROM caddy:2.11.9
RUN apk add --no-cache libcap \
 && addgroup -S gatehouse && adduser -S -G gatehouse -h /var/lib/gatehouse gatehouse \
 && mkdir -p /etc/gatehouse/policies /var/lib/gatehouse /data /config \
 && chown -R gatehouse:gatehouse /var/lib/gatehouse /data /config
COPY --from=builder /usr/bin/caddy /usr/bin/caddy
# Bind 80 and 443 without root.
RUN setcap cap_net_bind_service=+ep /usr/bin/caddy
COPY policies/gatehouse /etc/gatehouse/policies/gatehouse
COPY policies/entitlements /etc/gatehouse/policies/entitlements

# Policies (hot-reloaded) and the embedded grant store (file:///var/lib/gatehouse/grants.db).
VOLUME ["/etc/gatehouse/policies", "/var/lib/gatehouse"]
ENV XDG_DATA_HOME=/data XDG_CONFIG_HOME=/config \
    GATEHOUSE_HEALTHCHECK_URL=https://localhost/.gatehouse/healthz
USER gatehouse
# Liveness (healthz): an unhealthy container is restarted, which a Redis or
# IdP outage must not cause. Load balancers and Kubernetes readiness probes
# use /.gatehouse/readyz (docs/operations.md).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD wget -q -O /dev/null --no-check-certificate "$GATEHOUSE_HEALTHCHECK_URL" || exit 1
