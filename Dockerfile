# One image for the analysis service and the dashboard; launch.py installs the same way as on a
# developer machine (apt packages, venv, torch CPU wheel, offline models).
FROM python:3.11-slim-bookworm
WORKDIR /app
COPY . /app
RUN python3 launch.py install
ENV EMOTIVOICE_DATA_DIR=/data
VOLUME ["/data"]
ENTRYPOINT [".venv/bin/emotivoice"]
