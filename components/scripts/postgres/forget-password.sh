# shellcheck shell=bash
# The last initdb hook (/docker-entrypoint-initdb.d/99-forget-password.sh). Not executable, so the
# image's entrypoint sources it into its own shell: it removes the password the entrypoint read
# from POSTGRES_PASSWORD_FILE, so the server it starts next does not inherit it.
unset POSTGRES_PASSWORD
