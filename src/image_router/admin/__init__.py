"""The operator's use cases, shared by the CLI and the website's operator area (`/admin`):
credit grants and deductions, the accounts directory. Every action that changes money or
shows personal data appends an audit entry naming the operator."""
