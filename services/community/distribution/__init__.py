"""Distribution inside the community: stock, splits over households, deliveries."""
