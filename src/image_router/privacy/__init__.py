"""Privacy services: audit log, restriction of processing, data-subject requests,
policy notices, terms acceptance and cookie consent (`policy`)."""
