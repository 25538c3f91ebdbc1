#!/bin/bash
# EC2 user-data (plain shell variant) for a moninit monitoring node.
# Replace the values below with your launch template's. (The CloudFormation stack uses the
# cloud-init variant, user-data.yaml, and fills its values in itself.)
set -euo pipefail
PACKAGE_URL="s3://my-bucket/packages/moninit"         # + .deb/.rpm; or https://…/moninit
WORKSPACE_ID="ws-0b1c2d3e-aaaa-bbbb-cccc-123456789012"
INPUTS="s3://my-bucket/monitoring/"
PARAMETER_PATH="/monitoring/prod/"
# The programs, as pinned release archives (URL and SHA-256 each; see the README).
PROMETHEUS_ARCHIVE="s3://my-bucket/artifacts/prometheus.linux-amd64.tar.gz"
PROMETHEUS_SHA256="0000000000000000000000000000000000000000000000000000000000000000"
GRAFANA_ARCHIVE="s3://my-bucket/artifacts/grafana.linux-amd64.tar.gz"
GRAFANA_SHA256="0000000000000000000000000000000000000000000000000000000000000000"
AMP_PLUGIN="s3://my-bucket/artifacts/grafana-amazonprometheus-datasource.zip"
AMP_PLUGIN_SHA256="0000000000000000000000000000000000000000000000000000000000000000"

# 1. The agent's config: three facts and the program pins; region and identity come from
#    IMDSv2.
install -d -m 0755 /etc/moninit
cat >/etc/moninit/moninit.yaml <<YAML
region: auto
workspace_id: $WORKSPACE_ID
sources:
  - $INPUTS
  - ssm:$PARAMETER_PATH
prometheus:
  archive: {url: "$PROMETHEUS_ARCHIVE", sha256: "$PROMETHEUS_SHA256"}
grafana:
  archive: {url: "$GRAFANA_ARCHIVE", sha256: "$GRAFANA_SHA256"}
  plugins:
    - {url: "$AMP_PLUGIN", sha256: "$AMP_PLUGIN_SHA256"}
YAML

# 2. The package for this distribution family (keeps the config written above).
if command -v dnf >/dev/null 2>&1; then ext=rpm; else ext=deb; fi
pkg="/tmp/moninit.$ext"
case "$PACKAGE_URL" in
    s3://*)
        command -v aws >/dev/null 2>&1 || { [ "$ext" = deb ] && apt-get update -q && apt-get install -y -q awscli; }
        aws s3 cp --only-show-errors "$PACKAGE_URL.$ext" "$pkg"
        ;;
    *) curl -fsSL --retry 5 -o "$pkg" "$PACKAGE_URL.$ext" ;;
esac
if [ "$ext" = rpm ]; then
    dnf install -y -q "$pkg"
else
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Options::=--force-confold "$pkg"
fi

# 3. Start it (the package enables but never starts the unit).
systemctl start moninit.service
