#include "tre/audit.h"
